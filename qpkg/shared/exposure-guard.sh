#!/bin/sh
# ExposureGuard service script (QTS init script contract): start | stop | restart | status | check | remove,
# plus `cli ARGS...` (any exposure-guard command, e.g. `cli undo --all`) and `find-python`.
# Linked as /etc/init.d/exposure-guard.sh; QTS calls it at boot and from App Center's start/stop switch.
# Contract: docs/qpkg-format.md#Service script contract; Python search: docs/qpkg-format.md#Python on QTS.
#
# Environment (optional):
#   EXPOSURE_GUARD_PYTHON    the Python 3 to use (else: QNAP Python3 app, QPython3xx, Entware, PATH)
#   EXPOSURE_GUARD_QTS_ROOT  QTS root the agent checks (default /; tests point it at a fake tree)
#   EXPOSURE_GUARD_PYTHON_WAIT  seconds `start` waits in the background for Python to appear (default 300)

QPKG_NAME="ExposureGuard"
CONF=/etc/config/qpkg.conf
GETCFG=/sbin/getcfg
LOG_TOOL=/sbin/log_tool
MIN_PYTHON="3.8"
PATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin:/usr/local/sbin:$PATH
export PATH

_event() {  # _event LEVEL(0 info, 1 warning, 2 error) MESSAGE
	if [ -x "$LOG_TOOL" ]; then
		"$LOG_TOOL" -t"$1" -uSystem -p127.0.0.1 -mlocalhost -a "[$QPKG_NAME] $2" >/dev/null 2>&1
	fi
	echo "$QPKG_NAME: $2" >&2
}

_cfg() {  # _cfg SECTION KEY [DEFAULT]
	if [ -x "$GETCFG" ]; then
		"$GETCFG" "$1" "$2" -d "$3" -f "$CONF" 2>/dev/null
	else
		echo "$3"
	fi
}

# The QPKG directory: registered Install_Path, else where this script really is.
QPKG_ROOT=$(_cfg "$QPKG_NAME" Install_Path "")
if [ -z "$QPKG_ROOT" ] || [ ! -d "$QPKG_ROOT" ]; then
	_self=$0
	if [ -h "$_self" ]; then
		_self=$(readlink -f "$_self" 2>/dev/null || readlink "$_self")
	fi
	QPKG_ROOT=$(cd "$(dirname "$_self")" && pwd)
fi
STATE_DIR="$QPKG_ROOT/var"
SETTINGS="$QPKG_ROOT/etc/exposure-guard.ini"
PIDFILE="$STATE_DIR/exposure-guard.pid"
LOGFILE="$STATE_DIR/exposure-guard.log"
QTS_ROOT=${EXPOSURE_GUARD_QTS_ROOT:-/}
PYTHON_WAIT=${EXPOSURE_GUARD_PYTHON_WAIT:-300}
# Python is started isolated (-I: no PYTHON* variables, no script or working directory on sys.path; -S: no
# site-packages) with only our lib/ on sys.path. Run from a share, `python -m` would import whatever
# exposure_guard/ package lies in the caller's working directory — as root.
BOOT='import sys, runpy; sys.path.insert(0, sys.argv[1]); name = sys.argv[2]; del sys.argv[1:3]; runpy.run_module(name, run_name="__main__", alter_sys=True)'

_python_ok() {  # _python_ok PATH: an executable Python >= MIN_PYTHON
	[ -n "$1" ] && [ -x "$1" ] || return 1
	"$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)' >/dev/null 2>&1
}

find_python() {
	if [ -n "$EXPOSURE_GUARD_PYTHON" ]; then
		_python_ok "$EXPOSURE_GUARD_PYTHON" && { echo "$EXPOSURE_GUARD_PYTHON"; return 0; }
		return 1
	fi
	_candidates=""
	# QNAP's Python3 app: newer layout <Install_Path>/opt/python3, older <Install_Path>/python3.
	_dir=$(_cfg Python3 Install_Path "")
	if [ -n "$_dir" ]; then
		_candidates="$_dir/opt/python3/bin/python3 $_dir/python3/bin/python3 $_dir/bin/python3"
	fi
	# Third-party QPython3xx apps (newest first).
	for _app in QPython312 QPython311 QPython310 QPython39 QPython3; do
		_dir=$(_cfg "$_app" Install_Path "")
		[ -n "$_dir" ] && _candidates="$_candidates $_dir/bin/python3"
	done
	# Entware (opkg install python3).
	_dir=$(_cfg Entware Install_Path "")
	[ -n "$_dir" ] && _candidates="$_candidates $_dir/bin/python3"
	_candidates="$_candidates /opt/bin/python3"
	# Whatever else is on PATH (firmware python3 on some QTS 5 / QuTS hero builds).
	_onpath=$(command -v python3 2>/dev/null)
	_candidates="$_candidates $_onpath /usr/local/bin/python3 /usr/bin/python3"
	for _py in $_candidates; do
		if _python_ok "$_py"; then
			echo "$_py"
			return 0
		fi
	done
	return 1
}

_pid_running() {  # _pid_running: our agent's pid from the pidfile is alive (not a recycled pid)
	[ -f "$PIDFILE" ] || return 1
	_pid=$(cat "$PIDFILE" 2>/dev/null)
	case "$_pid" in ''|*[!0-9]*) return 1 ;; esac
	[ -r "/proc/$_pid/cmdline" ] || return 1
	tr '\000' ' ' < "/proc/$_pid/cmdline" 2>/dev/null | grep -qF "$QPKG_ROOT/lib exposure_guard run "
}

_agent() {  # _agent ARGS...: become exposure-guard ARGS in the isolated Python (the caller's directory is never searched)
	exec "$PYTHON" -I -S -c "$BOOT" "$QPKG_ROOT/lib" exposure_guard "$@"
}

_agent_env() {
	EXPOSURE_GUARD_STATE_DIR="$STATE_DIR"
	EXPOSURE_GUARD_SETTINGS="$SETTINGS"
	QNAP_QPKG="$QPKG_NAME"
	export EXPOSURE_GUARD_STATE_DIR EXPOSURE_GUARD_SETTINGS QNAP_QPKG
}

_need_python() {
	PYTHON=$(find_python) && return 0
	_event 2 "cannot run: no Python $MIN_PYTHON or newer found. Install Python3 from App Center (or Entware's python3), then start $QPKG_NAME again."
	return 1
}

_prepare_state() {
	mkdir -p "$STATE_DIR" && chmod 700 "$STATE_DIR" || {
		_event 2 "cannot create its state directory $STATE_DIR"
		return 1
	}
	# Keep the service log small: one rotation at 1 MiB.
	if [ -f "$LOGFILE" ] && [ "$(wc -c < "$LOGFILE")" -gt 1048576 ]; then
		mv -f "$LOGFILE" "$LOGFILE.1"
	fi
}

_wait_for_python() {  # poll for PYTHON_WAIT seconds
	_waited=0
	while [ "$_waited" -lt "$PYTHON_WAIT" ]; do
		PYTHON=$(find_python) && return 0
		sleep 2
		_waited=$((_waited + 2))
	done
	PYTHON=$(find_python)
}

do_start() {
	_enabled=$(_cfg "$QPKG_NAME" Enable FALSE | tr 'a-z' 'A-Z')
	if [ "$_enabled" != "TRUE" ]; then
		echo "$QPKG_NAME is disabled (App Center); not starting."
		return 1
	fi
	if _pid_running; then
		echo "$QPKG_NAME is already running (pid $(cat "$PIDFILE"))."
		return 0
	fi
	if ! PYTHON=$(find_python); then
		# QTS 5.2+ starts packages in parallel (qpkg_service): Entware's /opt or the Python3 app may come up
		# after us. Wait for it in the background, bounded, instead of failing the whole boot.
		_event 0 "waiting up to ${PYTHON_WAIT} s for Python $MIN_PYTHON or newer (Entware's /opt or the Python3 app may still be starting)"
		(
			if _wait_for_python; then
				_launch
			else
				_event 2 "cannot run: no Python $MIN_PYTHON or newer appeared within ${PYTHON_WAIT} s. Install Python3 from App Center (or Entware's python3); $QPKG_NAME tries again at its next start (or start it in App Center)."
			fi
		) < /dev/null > /dev/null 2>&1 &
		echo "$QPKG_NAME: no Python yet; waiting for it in the background (up to ${PYTHON_WAIT} s)."
		return 0
	fi
	_launch
}

_launch() {  # start the agent with $PYTHON and confirm it took its lock
	_prepare_state || return 1
	_agent_env
	cd "$QPKG_ROOT" || return 1
	echo "$(date '+%Y-%m-%d %H:%M:%S') starting with $PYTHON" >> "$LOGFILE"
	( _agent run --root "$QTS_ROOT" --settings "$SETTINGS" ) >> "$LOGFILE" 2>&1 < /dev/null &
	_pid=$!
	echo $_pid > "$PIDFILE"
	# The agent writes its pid into agent.lock once its settings are valid and it holds the instance
	# lock. A bad settings file, a second agent or a broken Python make it exit instead: say so, do not
	# claim "started". (Up to 15 s: the first start compiles the libraries on a slow NAS CPU.)
	_tries=0
	while [ $_tries -lt 75 ]; do
		[ -d "/proc/$_pid" ] || break  # (right after the fork it may not have become Python yet)
		[ "$(head -n 1 "$STATE_DIR/agent.lock" 2>/dev/null)" = "$_pid" ] && break
		sleep 0.2 2>/dev/null || sleep 1
		_tries=$((_tries + 1))
	done
	if ! _pid_running; then
		rm -f "$PIDFILE"
		_event 2 "did not start; see $LOGFILE: $(tail -n 3 "$LOGFILE" 2>/dev/null | tr '\n' ' ')"
		return 1
	fi
	echo "$QPKG_NAME started (pid $(cat "$PIDFILE"))."
	return 0
}

do_stop() {
	if ! _pid_running; then
		rm -f "$PIDFILE"
		echo "$QPKG_NAME is not running."
		return 0
	fi
	_pid=$(cat "$PIDFILE")
	kill -TERM "$_pid" 2>/dev/null
	_tries=0
	while [ $_tries -lt 50 ] && _pid_running; do
		sleep 0.2 2>/dev/null || sleep 1
		_tries=$((_tries + 1))
	done
	if _pid_running; then
		kill -KILL "$_pid" 2>/dev/null
		_event 1 "agent did not stop within 10 s and was killed"
	fi
	rm -f "$PIDFILE"
	echo "$QPKG_NAME stopped."
	return 0
}

do_status() {
	if _pid_running; then
		echo "$QPKG_NAME is running (pid $(cat "$PIDFILE"))."
		return 0
	fi
	echo "$QPKG_NAME is not running."
	return 3
}

WEBUI_LINK=/home/httpd/cgi-bin/qpkg/$QPKG_NAME

_link_webui() {  # (re)link the page's folder into QTS's admin web server; QTS may have removed it
	[ -d /home/httpd/cgi-bin ] || return 0
	mkdir -p /home/httpd/cgi-bin/qpkg && ln -sfn "$QPKG_ROOT/ui" "$WEBUI_LINK" ||
		_event 1 "could not link the page into QTS's web server ($WEBUI_LINK)"
}

_unlink_webui() {
	[ -h "$WEBUI_LINK" ] && rm -f "$WEBUI_LINK"
	return 0
}

do_cgi() {  # one request of the page, for QTS's web server: the answer (or a 503 page) on stdout
	if ! PYTHON=$(find_python) || ! _prepare_state >/dev/null 2>&1; then
		printf 'Status: 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n'
		echo "$QPKG_NAME cannot run: no Python $MIN_PYTHON or newer, or no state folder. See the event log."
		return 0
	fi
	_agent_env
	cd "$QPKG_ROOT" || return 1
	_agent web --cgi --root "$QTS_ROOT" --settings "$SETTINGS"
}

do_cli() {  # run one exposure-guard command in the foreground
	_need_python || return 1
	_prepare_state || return 1
	_agent_env
	cd "$QPKG_ROOT" || return 1
	_agent "$@"
}

case "$1" in
	start) _link_webui; do_start ;;
	stop) do_stop ;;
	restart) do_stop; _link_webui; do_start ;;
	status) do_status ;;
	check) shift; do_cli check --root "$QTS_ROOT" --settings "$SETTINGS" "$@" ;;
	cli) shift; do_cli "$@" ;;
	find-python) find_python ;;
	cgi) do_cgi ;;
	remove) do_stop; _unlink_webui ;;
	*)
		echo "usage: $0 {start|stop|restart|status|check [--json ...]|cli COMMAND [ARGS...]|cgi|find-python}" >&2
		exit 2
		;;
esac
exit $?
