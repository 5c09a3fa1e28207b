# idv: slim image, non-root, gunicorn. Keys and the database live in /data (a volume);
# nothing secret is baked into the image.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY policies ./policies
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin idv \
    && mkdir -p /data /etc/idv && chown idv /data
COPY --from=build /install /usr/local
COPY policies /etc/idv/policies
ENV IDV_DATA_DIR=/data \
    IDV_POLICY_FILE=/etc/idv/policies/default.toml \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER idv
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)" || exit 1
CMD ["idv", "serve", "--host", "0.0.0.0", "--port", "8080"]
