import { Authenticator } from '../../auth/authenticator.js';
import { BcryptPool } from '../../auth/bcrypt-pool.js';
import { Gatekeeper } from '../../auth/gatekeeper.js';
import { HtpasswdFile } from '../../auth/htpasswd.js';
import { AccessPolicy } from '../../auth/policy.js';
import type { KeyObject } from 'node:crypto';
import { loadOrCreateSigningKey, TokenSigner } from '../../auth/token.js';
import type { AuthConfig } from '../../config/schema.js';
import type { Logger } from '../../lib/logger.js';
import type { Metrics } from '../../observability/metrics.js';
import { AuthGuard } from './guard.js';

export interface AuthSetupOptions {
  /** Where the token signing key is kept (the store's `auth/` directory). */
  readonly keyDir: string;
  /** The signing key itself, shared by several replicas (issue #15: from Redis); `keyDir` is then not used. */
  readonly signingKey?: KeyObject;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** Hosted names (`hosted.repositories`): no anonymous pull unless a rule grants it. */
  readonly isHosted: (name: string) => boolean;
  readonly now?: () => number;
  /** How often the htpasswd file's mtime is checked besides fs.watch. */
  readonly htpasswdPollMs?: number;
}

export interface AuthSetup {
  readonly guard: AuthGuard;
  readonly htpasswd: HtpasswdFile;
  close(): Promise<void>;
}

/** Builds the auth layer from `auth` (which must have `htpasswd` set): users, policy, tokens, the HTTP guard. */
export function setupAuth(config: AuthConfig, opts: AuthSetupOptions): AuthSetup {
  const log = opts.logger;
  const htpasswd = new HtpasswdFile({
    path: config.htpasswd!,
    pollMs: opts.htpasswdPollMs,
    onLoad: ({ users, problems }) => {
      for (const p of problems) log.error('htpasswd entry refused', { file: config.htpasswd, problem: p });
      log.info('htpasswd loaded', { file: config.htpasswd, users });
    },
    onError: (message) => log.error('htpasswd not reloaded', { file: config.htpasswd, problem: message }),
  });
  htpasswd.watch();
  const bcrypt = new BcryptPool();
  const now = opts.now ?? Date.now;
  const { key, created } = opts.signingKey ? { key: opts.signingKey, created: false } : loadOrCreateSigningKey(opts.keyDir);
  if (created) log.info('token signing key created', { dir: opts.keyDir });
  const gatekeeper = new Gatekeeper({
    policy: new AccessPolicy({
      rules: config.rules,
      groups: config.groups,
      anonymousPull: config.anonymousPull,
      anonymousPullCidrs: config.anonymousPullCidrs,
      isHosted: opts.isHosted,
    }),
    authenticator: new Authenticator({ users: htpasswd, bcrypt, maxFailedLogins: config.maxFailedLogins, maxFailedLoginsPerAddress: config.maxFailedLoginsPerAddress, failedLoginWindowMs: config.failedLoginWindow, now }),
    signer: new TokenSigner({ key, service: config.service, now }),
    users: htpasswd,
    tokenTtlSeconds: Math.round(config.tokenExpiry / 1000),
    refreshTokenTtlSeconds: Math.round(config.refreshTokenExpiry / 1000),
  });
  const guard = new AuthGuard({ gatekeeper, metrics: opts.metrics, challenge: config.challenge, realm: config.realm });
  return {
    guard,
    htpasswd,
    close: async () => {
      htpasswd.close();
      await bcrypt.close();
    },
  };
}
