# syntax=docker/dockerfile:1
# hubcache container image.
#
#   docker build -t hubcache:0.1.0 --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) .
#   docker run -d -p 5000:5000 -v hubcache-data:/var/lib/hubcache hubcache:0.1.0
#
# Configure with HUBCACHE_* variables, flags after the image name (`serve --tag-ttl 10m`) or a
# mounted file (`serve --config /etc/hubcache/config.yaml`). Environment variables take precedence
# over the file, so the two set below win over `listen` and `storage.path` in a config file: override
# them with -e (or flags) rather than in the file. test/deploy/dockerfile.test.ts checks this file.

# Node.js 24 is the active LTS (supported until April 2028); Node 20 is past its end of life.
ARG NODE_IMAGE=node:24-bookworm-slim

# --- build: type-check src/, bundle it into dist/ (esbuild, scripts/build.mjs) ---------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json .npmrc ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/build.mjs ./scripts/
COPY src ./src
RUN npm run build

# --- runtime: production dependencies (the bundle's external ones), the bundle, the launcher -----
FROM ${NODE_IMAGE} AS runtime
ARG NODE_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="hubcache" \
      org.opencontainers.image.description="A pull-through caching registry for Docker Hub and other public registries" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${NODE_IMAGE}"

ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /src/dist ./dist
COPY bin ./bin

# A fixed non-root uid/gid (10001), numeric in USER so Kubernetes' runAsNonRoot can verify it. The
# store directory is created and owned here so that a fresh named volume inherits the ownership.
RUN groupadd --system --gid 10001 hubcache \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin hubcache \
 && mkdir -p /var/lib/hubcache \
 && chown 10001:10001 /var/lib/hubcache

ENV HUBCACHE_STORAGE_PATH=/var/lib/hubcache \
    HUBCACHE_LISTEN=0.0.0.0:5000
VOLUME /var/lib/hubcache
EXPOSE 5000
USER 10001:10001

# hubcache drains in-flight responses and blob downloads on SIGTERM (shutdown.timeout, default 30s):
# give `docker stop` a longer --time (compose: stop_grace_period) than that.
STOPSIGNAL SIGTERM

# Slim images have no curl: ask /healthz with node itself, on the port of HUBCACHE_LISTEN.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "const m = /^(?:\\[(.+)\\]|(.*)):(\\d+)$/.exec(process.env.HUBCACHE_LISTEN || ''); const h = m ? (m[1] ? '[' + m[1] + ']' : m[2]) : ''; const host = !h || h === '0.0.0.0' || h === '[::]' ? '127.0.0.1' : h; fetch('http://' + host + ':' + (m ? m[3] : '5000') + '/healthz', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1));"]

ENTRYPOINT ["node", "/app/bin/hubcache.js"]
CMD ["serve"]
