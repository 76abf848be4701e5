# ivrkit: the same install as the README's "Deploying" section, run as a non-root user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    IVRKIT_HOST=0.0.0.0 \
    IVRKIT_PORT=8000 \
    IVRKIT_DATABASE_URL=sqlite+aiosqlite:////data/ivrkit.db

WORKDIR /app
COPY pyproject.toml README.md ./
COPY ivrkit ./ivrkit
COPY simulator ./simulator
COPY flows ./flows
RUN pip install --no-cache-dir '.[postgres]'

RUN useradd --create-home --uid 10001 ivrkit && mkdir /data && chown ivrkit /data
USER ivrkit
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=3s --retries=3 \
  CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"

# TWILIO_AUTH_TOKEN, IVRKIT_PUBLIC_URL and IVRKIT_SECRET_KEY (account_pin and support_line keep caller
# secrets) come from the environment (docker run -e ...).
ENTRYPOINT ["ivrkit", "serve"]
CMD ["flows/"]
