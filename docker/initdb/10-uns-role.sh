#!/bin/sh
# First start of the TimescaleDB container: uns-bridge's own role, not a superuser. It owns database uns
# (so it can create its tables) and has the timescaledb extension created for it by the superuser
# (extensions are not trusted: the role could not create it itself).
set -eu
password="$(cat /run/secrets/uns_db_password)"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -v pw="$password" <<'SQL'
CREATE ROLE uns LOGIN PASSWORD :'pw' NOSUPERUSER NOCREATEDB NOCREATEROLE;
CREATE DATABASE uns OWNER uns;
\connect uns
CREATE EXTENSION IF NOT EXISTS timescaledb;
SQL
