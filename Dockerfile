# Consent Gateway: a non-root image; dependencies are installed before sources for layer caching.
# BASE: any Debian bookworm image with python3 and venv. The official Python image by default;
# scripts/container-check.sh builds on a local debootstrap base where no registry is reachable.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8000 \
    GATEWAY_BANNERS_DIR=/app/banners \
    GATEWAY_LOCALES_DIR=/app/locales \
    GATEWAY_DATA_DIR=/var/lib/consent-gateway \
    PATH=/opt/venv/bin:$PATH

# Country ranges for the embedded geo database (IPFire Location, CC BY-SA 4.0).
RUN apt-get update \
 && apt-get install -y --no-install-recommends tor-geoipdb \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin gateway

WORKDIR /app

# Dependencies first: a source change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir gateway && touch gateway/__init__.py \
 && pip install . \
 && pip uninstall -y consent-gateway \
 && rm -rf gateway build *.egg-info

COPY gateway ./gateway
COPY static ./static
COPY banners ./banners
COPY locales ./locales
RUN pip install --no-deps . \
 && mkdir -p "$GATEWAY_DATA_DIR" \
 && consent-gateway i18n compile \
 && consent-gateway geo build --source /usr/share/tor --output /app/geo/country.mmdb \
 && GATEWAY_GEOIP_DB=/app/geo/country.mmdb consent-gateway check \
 && chown -R gateway "$GATEWAY_DATA_DIR"

ENV GATEWAY_GEOIP_DB=/app/geo/country.mmdb
USER gateway
VOLUME ["/var/lib/consent-gateway"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=2s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
CMD ["consent-gateway", "serve"]
