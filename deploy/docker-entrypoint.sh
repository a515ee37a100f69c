#!/bin/sh
# Secrets from files: for every TRE_VAR_FILE=/path in the environment, export TRE_VAR with the
# file's content (the postgres-image convention), so that Docker / Kubernetes secrets
# mounted as files never appear in a compose file, an image or `docker inspect`.
# Only TRE_* names: SSL_CERT_FILE and the like are real paths, not secrets.
set -eu
for name in $(env | sed -n 's/^\(TRE_[A-Z0-9_]*\)_FILE=.*/\1/p'); do
    eval "path=\${${name}_FILE}"
    if [ -f "$path" ]; then
        value=$(cat "$path")
        export "$name=$value"
        unset "${name}_FILE"
    else
        echo "docker-entrypoint: ${name}_FILE=$path is not a file" >&2
        exit 1
    fi
done
exec "$@"
