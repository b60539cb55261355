#!/usr/bin/env bash
# Makes sure Redis (127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432, user postgres
# without a password, database "test") answer, for `make run` and `make test`.
# Idempotent and silent when both are already fine.
#
#   scripts/services.sh            Redis and PostgreSQL
#   scripts/services.sh redis      Redis only
#   scripts/services.sh postgres   PostgreSQL only
#
# For each service that does not answer, the first that applies wins:
#   1. installed but stopped       start it (redis-server --daemonize / pg_ctlcluster)
#   2. a Docker engine is running  docker compose up -d <service>
#   3. Debian/Ubuntu, root or sudo apt-get install it, then 1.
# No systemctl anywhere: containers and CI runners usually have no systemd.
#
# A server that already runs is left as it is: never restarted, reconfigured
# or joined by a second server on its port (the one thing done on it is
# creating a missing database on a local PostgreSQL that lets the user in).
# One that runs but turns the script away (a Redis with a password, a
# PostgreSQL that wants one on 127.0.0.1) stops it with a message naming the
# variable to set. The variables are the ones the programs read:
# TOLLGATE_TEST_REDIS_URL and TOLLGATE_TEST_DATABASE_URL for the tests, or with
# SERVICES_FOR=run (scripts/run.sh) TOLLGATE_REDIS_URL and TOLLGATE_DATABASE_URL
# for tollgate serve. Set, the script checks that URL, with its credentials,
# instead of the local default; a URL naming another host is only checked.
# pg_hba.conf is changed (trust for 127.0.0.1 and ::1) only on a cluster the
# script itself started or installed in the same run, as a fresh Debian
# cluster wants a password there.
#
# REDIS_PORT and PG_PORT override the ports (default 6379, 5432); they exist so
# the script can be exercised against throwaway instances. A URL's own port wins.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REDIS_PORT=${REDIS_PORT:-6379}
PG_PORT=${PG_PORT:-5432}
WAIT_SECONDS=${WAIT_SECONDS:-30}
TMP_BASE=${TMPDIR:-/tmp}
REDIS_LOG= # set when this script starts redis-server, for error messages

log() { echo "services: $*" >&2; }
die() {
	echo "services: ERROR: $*" >&2
	exit 1
}

# The URL variables of the program the services are for.
SERVICES_FOR=${SERVICES_FOR:-test}
case "$SERVICES_FOR" in
test) REDIS_URL_VAR=TOLLGATE_TEST_REDIS_URL DB_URL_VAR=TOLLGATE_TEST_DATABASE_URL ;;
run) REDIS_URL_VAR=TOLLGATE_REDIS_URL DB_URL_VAR=TOLLGATE_DATABASE_URL ;;
*) die "SERVICES_FOR=$SERVICES_FOR: expected test or run" ;;
esac

# url_hint tells, for messages, who reads the URL variable $1 and who its twin.
url_hint() {
	case "$1" in
	TOLLGATE_TEST_*) echo "the tests read it; tollgate serve and make run read TOLLGATE_${1#TOLLGATE_TEST_}" ;;
	*) echo "tollgate serve reads it; the tests read TOLLGATE_TEST_${1#TOLLGATE_}" ;;
	esac
}

have() { command -v "$1" >/dev/null 2>&1; }

# t runs a command with a time limit when coreutils' timeout exists, so a
# wedged server cannot hang the script.
t() {
	if have timeout; then timeout 10 "$@"; else "$@"; fi
}

is_root() { [ "$(id -u)" = 0 ]; }

can_root() { is_root || have sudo; }

as_root() {
	if is_root; then
		"$@"
	elif have sudo; then
		sudo "$@"
	else
		return 1
	fi
}

# as_postgres runs a command as the postgres OS user (peer auth on the socket).
as_postgres() {
	if [ "$(id -un)" = postgres ]; then
		"$@"
	elif is_root && have runuser; then
		runuser -u postgres -- "$@"
	elif is_root; then
		su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
	elif have sudo; then
		sudo -u postgres "$@"
	else
		return 1
	fi
}

docker_ready() {
	have docker && t docker info >/dev/null 2>&1 && t docker compose version >/dev/null 2>&1
}

compose_up() {
	log "starting $1 with docker compose"
	docker compose -f "$ROOT/docker-compose.yml" up -d "$1" >&2 ||
		die "docker compose up -d $1 failed"
}

# apt_install installs Debian packages, keeping apt's chatter in a log that is
# shown only when it fails.
apt_install() {
	local logf="$TMP_BASE/tollgate-apt.log"
	log "installing $* with apt-get (log: $logf)"
	if ! { as_root apt-get update &&
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"; } >"$logf" 2>&1; then
		tail -n 20 "$logf" >&2
		die "apt-get install $* failed (full log: $logf)"
	fi
}

can_apt() { have apt-get && can_root; }

# wait_for polls check (a function name) for up to WAIT_SECONDS; on timeout
# it shows the end of logfile, when one is given.
wait_for() {
	local what=$1 check=$2 logfile=${3:-} i
	for ((i = 0; i < WAIT_SECONDS * 2; i++)); do
		"$check" && return 0
		sleep 0.5
	done
	if [ -n "$logfile" ] && [ -r "$logfile" ]; then
		tail -n 5 "$logfile" >&2
	fi
	die "$what did not answer within ${WAIT_SECONDS}s"
}

# port_open tells whether something accepts TCP connections on host:port.
port_open() {
	(exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# ------------------------------------------------------------------ URLs

# parse_url splits scheme://[user[:password]@]host[:port][/path][?query] into
# U_SCHEME, U_AUTH (user info, host and port as written), U_USER, U_PASS
# (percent-encoded as written; U_HASPASS=1 when there is a password), U_HOST,
# U_PORT (empty when not given), U_PATH (without its /, still encoded) and
# U_QUERY (with its ?).
parse_url() {
	local url=$1 rest hostport userinfo
	[[ $url == *://* ]] || url="?://$url"
	U_SCHEME=${url%%://*}
	rest=${url#*://}
	U_AUTH=${rest%%[/?]*}
	rest=${rest:${#U_AUTH}}
	U_QUERY=''
	[[ $rest == *\?* ]] && U_QUERY="?${rest#*\?}"
	rest=${rest%%\?*}
	U_PATH=${rest#/}
	U_USER='' U_PASS='' U_HASPASS=''
	hostport=$U_AUTH
	if [[ $U_AUTH == *@* ]]; then
		userinfo=${U_AUTH%@*}
		hostport=${U_AUTH##*@}
		U_USER=${userinfo%%:*}
		if [[ $userinfo == *:* ]]; then
			U_PASS=${userinfo#*:}
			U_HASPASS=1
		fi
	fi
	U_PORT=
	if [[ $hostport == \[* ]]; then
		U_HOST=${hostport%%]*}
		U_HOST=${U_HOST#[}
		U_PORT=${hostport#*]}
		U_PORT=${U_PORT#:}
	elif [[ $hostport == *:* ]]; then
		U_HOST=${hostport%:*}
		U_PORT=${hostport##*:}
	else
		U_HOST=$hostport
	fi
}

# mask_url prints the URL last given to parse_url with its password, and a
# password= parameter's value, as ***.
mask_url() {
	local url=$1
	if [ -n "$U_HASPASS" ]; then
		url=${url/"$U_USER:$U_PASS@"/"$U_USER:***@"}
	fi
	if [[ $url =~ ^(.*[?\&]password=)[^\&]*(.*)$ ]]; then
		url="${BASH_REMATCH[1]}***${BASH_REMATCH[2]}"
	fi
	printf '%s' "$url"
}

# pct_decode undoes a URL's %XX escapes.
pct_decode() {
	local s=${1//\\/\\\\}
	printf '%b' "${s//%/\\x}"
}

# is_local tells whether host is this machine's loopback, where the script may
# start a server ("" is PostgreSQL's Unix socket).
is_local() {
	case "$1" in
	"" | 127.0.0.1 | localhost | ::1) return 0 ;;
	*) return 1 ;;
	esac
}

# ---------------------------------------------------------------- Redis

# The Redis to check: R_HOST, R_PORT, R_USER, R_PASS (decoded) and R_WHERE,
# its name in messages. Set by redis_target.
R_HOST='' R_PORT='' R_USER='' R_PASS='' R_WHERE=''
REDIS_REPLY= # what redis_check last heard

redis_target() {
	local url=${!REDIS_URL_VAR:-}
	if [ -z "$url" ]; then
		R_HOST=127.0.0.1 R_PORT=$REDIS_PORT R_USER='' R_PASS=''
		R_WHERE="127.0.0.1:$REDIS_PORT"
		return 0
	fi
	parse_url "$url"
	case "$U_SCHEME" in
	redis) ;;
	rediss | unix)
		log "$REDIS_URL_VAR is a $U_SCHEME:// URL, which this script cannot check; taking it as working"
		return 1
		;;
	*) die "$REDIS_URL_VAR: expected a redis:// URL, got \"$(mask_url "$url")\"" ;;
	esac
	R_HOST=${U_HOST:-127.0.0.1} R_PORT=${U_PORT:-6379}
	R_USER=$(pct_decode "$U_USER") R_PASS=$(pct_decode "$U_PASS")
	R_WHERE="$(mask_url "$url") ($REDIS_URL_VAR)"
	if is_local "$R_HOST"; then
		REDIS_PORT=$R_PORT
	fi
}

# redis_talk connects to host:port over bash's /dev/tcp (no client needed, and
# no password on a command line), sends AUTH when given a password, then PING,
# and prints the first reply that is not +OK: +PONG from a usable Redis. It
# fails only when nothing accepts the connection; a listener that says
# nothing prints an empty line.
redis_talk() {
	local host=$1 port=$2 user=$3 pass=$4
	(
		exec 3<>"/dev/tcp/$host/$port" || exit 1
		export LC_ALL=C # so ${#x} counts bytes
		line=
		if [ -n "$pass" ]; then
			# shellcheck disable=SC2016 # RESP's $ (a bulk string) is literal
			if [ -n "$user" ]; then
				printf '*3\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n' \
					"${#user}" "$user" "${#pass}" "$pass" >&3
			else
				printf '*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n' "${#pass}" "$pass" >&3
			fi
			IFS= read -r -t 2 line <&3 || line=
			line=${line%$'\r'}
			if [ "$line" != +OK ]; then
				printf '%s\n' "$line"
				exit 0
			fi
		fi
		printf 'PING\r\n' >&3
		IFS= read -r -t 2 line <&3 || line=
		printf '%s\n' "${line%$'\r'}"
	) 2>/dev/null
}

# redis_check asks the Redis of redis_target for PING and keeps its answer in
# REDIS_REPLY. Returns 0 for PONG, 1 when nothing listens, 2 for any other
# answer (or none).
redis_check() {
	local rc=0
	if have timeout; then
		# A host that drops packets would hold the connect for minutes.
		REDIS_REPLY=$(timeout 10 "$BASH" -c "$(declare -f redis_talk)"'; redis_talk "$@"' _ \
			"$R_HOST" "$R_PORT" "$R_USER" "$R_PASS") || rc=$?
	else
		REDIS_REPLY=$(redis_talk "$R_HOST" "$R_PORT" "$R_USER" "$R_PASS") || rc=$?
	fi
	case "$rc" in
	0) [ "$REDIS_REPLY" = +PONG ] && return 0 ;;
	1) REDIS_REPLY='' && return 1 ;;
	*) REDIS_REPLY='' ;; # timed out: something holds the connection
	esac
	return 2
}

# redis_settled: the Redis answers, if only to say no; not while it loads
# its data set or runs a script.
redis_settled() {
	local rc=0
	redis_check || rc=$?
	case "$rc:$REDIS_REPLY" in
	1:* | 2:-LOADING* | 2:-BUSY*) return 1 ;;
	*) return 0 ;;
	esac
}

# redis_bind prints the addresses redis-server is to listen on: 127.0.0.1,
# and ::1 as "-::1" (skipped when the machine has no IPv6) where Redis knows
# that prefix, which came with 6.2; an older one takes "-::1" for a host name
# and aborts. ::1 is left out too when something else holds the port there:
# Redis aborts on an address in use, "-" or not.
redis_bind() {
	local v major minor
	v=$(redis-server --version 2>/dev/null) || v=
	v=${v#*v=}
	v=${v%% *}
	IFS=. read -r major minor _ <<<"$v"
	if [[ $major =~ ^[0-9]+$ && $minor =~ ^[0-9]+$ ]] &&
		((major > 6 || (major == 6 && minor >= 2))) && ! port_open ::1 "$REDIS_PORT"; then
		echo "127.0.0.1 -::1"
	else
		echo 127.0.0.1
	fi
}

redis_start_local() {
	local dir bind
	! port_open 127.0.0.1 "$REDIS_PORT" ||
		die "not starting redis-server: something already listens on 127.0.0.1:$REDIS_PORT"
	# The package's directories for the standard port only: a throwaway port
	# gets a directory and a log of its own.
	if [ "$REDIS_PORT" = 6379 ] && [ -d /var/lib/redis ] && [ -w /var/lib/redis ] &&
		[ -d /var/log/redis ] && [ -w /var/log/redis ]; then
		dir=/var/lib/redis
		REDIS_LOG=/var/log/redis/redis-server.log
	else
		dir="$TMP_BASE/tollgate-redis-$REDIS_PORT"
		mkdir -p "$dir"
		REDIS_LOG="$dir/redis-server.log"
	fi
	bind=$(redis_bind)
	log "starting redis-server --bind $bind --port $REDIS_PORT (log: $REDIS_LOG)"
	# Persistence is off: this Redis holds test and demo data only. With
	# --daemonize the exit status only covers the arguments: a failure to
	# listen shows up in the log, and as wait_for's timeout.
	# shellcheck disable=SC2086 # bind is one to two addresses
	redis-server --daemonize yes --bind $bind --port "$REDIS_PORT" \
		--save "" --appendonly no --dir "$dir" --logfile "$REDIS_LOG" >&2 ||
		die "redis-server failed to start (see $REDIS_LOG)"
}

# redis_start brings up a Redis on 127.0.0.1:REDIS_PORT, where nothing listens.
redis_start() {
	if have redis-server; then
		redis_start_local
	elif docker_ready; then
		compose_up redis
	elif can_apt; then
		apt_install redis-server
		# The package may have started its own instance already.
		port_open 127.0.0.1 "$REDIS_PORT" || redis_start_local
	else
		die "Redis is not answering on 127.0.0.1:$REDIS_PORT and cannot be started here: install redis-server, start a Docker engine, or run as root/with sudo on Debian/Ubuntu"
	fi
}

# redis_refused explains an answer other than PONG and stops.
redis_refused() {
	local reply=${REDIS_REPLY#-}
	case "$REDIS_REPLY" in
	-NOAUTH* | -WRONGPASS* | -NOPERM* | -ERR*[Pp]assword* | -ERR*AUTH*)
		if [ -n "${!REDIS_URL_VAR:-}" ]; then
			die "Redis at $R_WHERE turns these credentials away: $reply
  Check the user and password in $REDIS_URL_VAR."
		fi
		die "Redis on 127.0.0.1:$REDIS_PORT is running but needs a password: $reply
  This script does not start a second Redis on a port in use, nor change that one. Either
  - set $REDIS_URL_VAR=redis://:PASSWORD@127.0.0.1:$REDIS_PORT/0 (redis://USER:PASSWORD@... for an ACL user; $(url_hint "$REDIS_URL_VAR")), or
  - run a Redis without a password there."
		;;
	-*) die "Redis at $R_WHERE answers PING with: $reply" ;;
	*)
		is_local "$R_HOST" ||
			die "Redis at $R_WHERE does not answer PING${REDIS_REPLY:+ (the reply was: $REDIS_REPLY)}"
		die "something listens on $R_HOST:$R_PORT but does not answer PING as Redis does${REDIS_REPLY:+ (the reply was: $REDIS_REPLY)}; this script does not start another server on a port in use. Free the port, or set $REDIS_URL_VAR to a Redis ($(url_hint "$REDIS_URL_VAR"))."
		;;
	esac
}

# ensure_redis starts a Redis only where nothing listens: one that answers
# anything but PONG is running, and is explained, not joined by a second.
ensure_redis() {
	redis_target || return 0
	local rc=0
	redis_check || rc=$?
	[ "$rc" = 0 ] && return 0
	if [ "$rc" = 1 ]; then
		is_local "$R_HOST" || die "Redis at $R_WHERE is not answering"
		redis_start
		wait_for "Redis on 127.0.0.1:$REDIS_PORT${REDIS_LOG:+ (log: $REDIS_LOG)}" redis_settled "$REDIS_LOG"
	else
		# Running; give one that is still loading its data set time.
		wait_for "Redis at $R_WHERE" redis_settled
	fi
	redis_check || redis_refused
}

# ----------------------------------------------------------- PostgreSQL

# The database to check: P_URL, P_HOST, P_PORT, P_DB (decoded), P_HASPASS,
# P_MAINT (the same server and credentials, database "postgres") and P_WHERE,
# its name in messages. Set by pg_target.
P_URL='' P_HOST='' P_PORT='' P_DB='' P_HASPASS='' P_MAINT='' P_WHERE=''
PSQL_ERR= # psql's message from psql_try's last failure
PG_OURS=  # set once this run started or installed the local cluster

pg_target() {
	local url=${!DB_URL_VAR:-}
	if [ -z "$url" ]; then
		url="postgres://postgres@127.0.0.1:$PG_PORT/test?sslmode=disable"
		P_WHERE="postgres://postgres@127.0.0.1:$PG_PORT/test"
	fi
	parse_url "$url"
	case "$U_SCHEME" in
	postgres | postgresql) ;;
	*) die "$DB_URL_VAR: expected a postgres:// URL, got \"$(mask_url "$url")\"" ;;
	esac
	P_URL=$url P_HOST=$U_HOST P_PORT=${U_PORT:-5432} P_HASPASS=$U_HASPASS
	[[ $U_QUERY == *[?\&]password=* ]] && P_HASPASS=1
	P_DB=$(pct_decode "$U_PATH")
	P_MAINT="$U_SCHEME://$U_AUTH/postgres$U_QUERY"
	[ -n "$P_WHERE" ] || P_WHERE="$(mask_url "$url") ($DB_URL_VAR)"
	if is_local "$P_HOST"; then
		PG_PORT=$P_PORT
	fi
}

pg_up() {
	if have pg_isready; then
		t pg_isready -q -d "$P_URL"
		return
	fi
	# No client tools (PostgreSQL in Docker): an open port is the best we can tell.
	port_open "${P_HOST:-127.0.0.1}" "$P_PORT"
}

# pg_cluster prints "<version> <name>" of the local Debian cluster to start:
# the one configured on PG_PORT, else the newest version's "main".
pg_cluster() {
	local line ver
	if have pg_lsclusters; then
		line=$(pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p { print $1, $2; exit }') || line=
		if [ -n "$line" ]; then
			echo "$line"
			return
		fi
	fi
	# shellcheck disable=SC2012 # version directories are plain numbers
	ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1) || ver=
	[ -n "$ver" ] && echo "$ver main"
}

pg_installed() { have pg_ctlcluster && [ -n "$(pg_cluster)" ]; }

pg_start_local() {
	local ver name
	read -r ver name <<<"$(pg_cluster)"
	[ -n "${ver:-}" ] || die "no PostgreSQL cluster found under /etc/postgresql"
	log "starting PostgreSQL cluster $ver/$name"
	as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start >&2 ||
		die "pg_ctlcluster $ver $name start failed (see /var/log/postgresql/postgresql-$ver-$name.log)"
	PG_OURS=1
}

# psql_try connects to the URL $1 and runs select 1; when that fails,
# PSQL_ERR holds psql's message.
psql_try() {
	PSQL_ERR=$(PGCONNECT_TIMEOUT=5 t psql -w -X -q -d "$1" -c 'select 1' 2>&1 >/dev/null) && return 0
	PSQL_ERR=$(printf '%s' "$PSQL_ERR" | tr -s '\n\t' '  ')
	PSQL_ERR=${PSQL_ERR:-psql failed}
	return 1
}

# pg_may_trust: the script may change how this server lets 127.0.0.1 in only
# when it started or installed it in this run, for a URL without a password.
# A PostgreSQL that was already running belongs to someone: it is left alone.
pg_may_trust() {
	[ -n "$PG_OURS" ] && is_local "$P_HOST" && [ -z "$P_HASPASS" ]
}

# pg_refused explains a running PostgreSQL that turns the URL away, and stops.
pg_refused() {
	if [ -n "${!DB_URL_VAR:-}" ]; then
		die "PostgreSQL turns $P_WHERE away: $1
  Check the user, password and database in $DB_URL_VAR."
	fi
	die "PostgreSQL on 127.0.0.1:$PG_PORT is running but turns postgres@127.0.0.1 without a password away: $1
  This script changes pg_hba.conf only on a cluster it started or installed itself, not on one that was already running. Either
  - set $DB_URL_VAR=postgres://USER:PASSWORD@127.0.0.1:$PG_PORT/test?sslmode=disable, for a role that may create schemas in that database ($(url_hint "$DB_URL_VAR")), or
  - let 127.0.0.1 in without a password yourself: \"host all all 127.0.0.1/32 trust\" (and ::1/128) at the top of pg_hba.conf, then reload PostgreSQL."
}

# pg_trust puts trust lines for loopback TCP at the top of pg_hba.conf (a
# fresh Debian cluster uses scram there) and reloads the server. Only for a
# cluster this run started or installed: see pg_may_trust.
pg_trust() {
	local hba ver name
	can_root || die "PostgreSQL on 127.0.0.1:$PG_PORT wants a password, and letting 127.0.0.1 in without one (pg_hba.conf) needs root or sudo"
	hba=$(as_postgres psql -X -At -p "$PG_PORT" -c 'show hba_file' 2>/dev/null) || hba=
	if [ -z "$hba" ]; then
		read -r ver name <<<"$(pg_cluster)"
		hba="/etc/postgresql/${ver:-?}/${name:-main}/pg_hba.conf"
	fi
	as_root test -f "$hba" || die "cannot find pg_hba.conf to enable trust auth on 127.0.0.1 (tried $hba)"
	if as_root head -n 3 "$hba" | grep -q 'host all all 127.0.0.1/32 trust'; then
		die "PostgreSQL rejects postgres@127.0.0.1 although $hba already trusts it; check the server log"
	fi
	log "enabling trust auth for 127.0.0.1 and ::1 in $hba"
	# Each "1i" is printed before the old line 1, in the order given.
	as_root sed -i \
		-e '1i # added by tollgate scripts/services.sh: local development only' \
		-e '1i host all all 127.0.0.1/32 trust' \
		-e '1i host all all ::1/128 trust' "$hba" ||
		die "could not edit $hba"
	as_postgres psql -X -q -p "$PG_PORT" -c 'select pg_reload_conf()' >/dev/null ||
		die "could not reload PostgreSQL after editing $hba"
	# The reload is asynchronous; give it a moment.
	local i
	for ((i = 0; i < 20; i++)); do
		psql_try "$P_MAINT" && return 0
		sleep 0.5
	done
	die "postgres@127.0.0.1 still cannot connect after enabling trust in $hba"
}

# pg_ensure_db checks that the URL connects, and on this machine creates its
# database when the same credentials get into "postgres" but not into it.
pg_ensure_db() {
	if ! have psql; then
		log "psql not installed; cannot check $P_WHERE (assuming it works)"
		return 0
	fi
	psql_try "$P_URL" && return 0
	local err=$PSQL_ERR
	if ! psql_try "$P_MAINT"; then
		pg_may_trust || pg_refused "$err"
		pg_trust
		psql_try "$P_URL" && return 0
		err=$PSQL_ERR
	fi
	# These credentials get in: the database is missing.
	if ! is_local "$P_HOST" || [ -z "$P_DB" ]; then
		die "cannot connect to $P_WHERE: $err"
	fi
	log "creating database $P_DB"
	t createdb -w --maintenance-db="$P_MAINT" "$P_DB" >&2 ||
		die "createdb $P_DB failed (connecting as in $P_WHERE)"
	psql_try "$P_URL" || die "cannot connect to $P_WHERE: $PSQL_ERR"
}

ensure_postgres() {
	pg_target
	if ! pg_up; then
		is_local "$P_HOST" || die "PostgreSQL at $P_WHERE is not answering"
		if pg_installed; then
			pg_start_local
		elif docker_ready; then
			compose_up postgres
		elif can_apt; then
			apt_install postgresql
			PG_OURS=1
			# The package creates and usually starts a "main" cluster.
			pg_up || pg_start_local
		else
			die "PostgreSQL is not answering on 127.0.0.1:$PG_PORT and cannot be started here: install postgresql, start a Docker engine, or run as root/with sudo on Debian/Ubuntu"
		fi
		wait_for "PostgreSQL on 127.0.0.1:$PG_PORT" pg_up
	fi
	pg_ensure_db
}

# ------------------------------------------------------------------ main

case "${1:-all}" in
redis) ensure_redis ;;
postgres | postgresql) ensure_postgres ;;
all | both)
	ensure_redis
	ensure_postgres
	;;
-h | --help)
	awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
	;;
*) die "unknown argument '$1' (use: redis, postgres or nothing for both)" ;;
esac
