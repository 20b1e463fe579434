#!/bin/sh
# The image's entry point: the first argument names the service (deploy/Dockerfile).
set -eu
# Uploaded datasets live on the volume; the default one is copied there once.
mkdir -p "$PEFTLAB_VAR/data" "$PEFTLAB_VAR/runs"
[ -d "$PEFTLAB_VAR/data/default" ] || cp -r "$PEFTLAB_SEED_DATA/default" "$PEFTLAB_VAR/data/default"
service="${1:-gateway}"
[ "$#" -gt 0 ] && shift
case "$service" in
  gateway | optimizer | comparator) exec python -m "services.$service" "$@" ;;
  trainer) exec peftlab trainer join --redis "${PEFTLAB_REDIS_URL:?set PEFTLAB_REDIS_URL}" "$@" ;;
  ui) exec python -m streamlit run /opt/peftlab/ui/app.py --server.address 0.0.0.0 \
        --server.port "${PEFTLAB_UI_PORT:-8501}" --server.headless true --browser.gatherUsageStats false "$@" ;;
  health) exec python -m services.common.healthcheck "$@" ;;
  *) exec "$service" "$@" ;;
esac
