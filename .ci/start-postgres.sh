# Sourced by .ci/run: a throwaway PostgreSQL cluster on 127.0.0.1:${EG_PG_PORT:-54329} for the server tests.
# Exports EXPOSURE_GUARD_TEST_PG_URL; the cluster is stopped when the calling shell exits.
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
pgdata=$(mktemp -d /tmp/eg-pg.XXXX)
chown postgres "$pgdata"
su postgres -s /bin/sh -c "$pgbin/initdb -D $pgdata -A trust -U postgres >/dev/null"
if ! su postgres -s /bin/sh -c "$pgbin/pg_ctl -D $pgdata -l $pgdata/log -w -o '-p ${EG_PG_PORT:-54329} -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off' start >/dev/null"; then
    echo "PostgreSQL did not start (port ${EG_PG_PORT:-54329} busy?):" >&2
    tail -n 20 "$pgdata/log" >&2
    return 1 2>/dev/null || exit 1
fi
export EXPOSURE_GUARD_TEST_PG_URL="postgresql+psycopg://postgres@127.0.0.1:${EG_PG_PORT:-54329}/postgres"
trap 'su postgres -s /bin/sh -c "$pgbin/pg_ctl -D $pgdata -m fast stop" >/dev/null 2>&1 || true' EXIT
echo "PostgreSQL running: $EXPOSURE_GUARD_TEST_PG_URL"
