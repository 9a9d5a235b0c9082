#!/bin/sh
# ExposureGuard installer: our own implementation of the QPKG install contract (not QDK code).
# The contract: docs/qpkg-format.md#Install flow on the NAS (and #qpkg.conf entry, #Uninstall).
#
# The package header extracts the control files and data.tar.gz into <volume>/.qpkg/.tmp-ExposureGuard/
# and runs `/bin/sh qinstall.sh` there. This script then, like QDK's qinstall.sh:
#   1. sources qpkg.cfg and package_routines, calls pkg_init
#   2. checks firmware version and requirements (pkg_check_requirement)
#   3. on upgrade: remembers Enable, stops the service, saves user-edited QPKG_CONFIG files
#   4. extracts data.tar.gz into <volume>/.qpkg/ExposureGuard (file list in .list), restores the saved
#      settings, removes files the previous version had and this one has not (.oldlist - .list)
#   5. copies icons, links /etc/init.d/<service program> and the rcS.d/rcK.d start/stop links,
#      registers [ExposureGuard] in /etc/config/qpkg.conf, writes .uninstall.sh
#   6. enables and starts the service (unless the user had disabled it before an upgrade)
# Progress goes to /tmp/update_process (0 begin ... 3 done, -1 failed) and messages to the event log.
# Exit 0 on success, 1 on failure (nothing half-registered is left enabled).

PATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin:/usr/local/sbin:$PATH
export PATH

CMD_GETCFG=/sbin/getcfg
CMD_SETCFG=/sbin/setcfg
CMD_RMCFG=/sbin/rmcfg
CMD_LOG_TOOL=/sbin/log_tool
SYS_CONFIG_DIR=/etc/config
SYS_QPKG_CONFIG_FILE=/etc/config/qpkg.conf
SYS_DEFAULT_ULINUX_CONF=/etc/default_config/uLinux.conf
SYS_INIT_DIR=/etc/init.d
SYS_STARTUP_DIR=/etc/rcS.d
SYS_SHUTDOWN_DIR=/etc/rcK.d
SYS_RSS_IMG_DIR=/home/httpd/RSS/images
SYS_PROGRESS_FILE=/tmp/update_process

SYS_EXTRACT_DIR=$(pwd)
SYS_QPKG_DATA_FILE="$SYS_EXTRACT_DIR/data.tar.gz"
SYS_QPKG_INSTALL_PATH=${SYS_EXTRACT_DIR%/*}
SYS_BUILT_INFO="$SYS_EXTRACT_DIR/built_info"

# ---- helpers (also available to package_routines) -------------------------------------------------
log() { echo "$QPKG_NAME: $*"; }

event() {  # event LEVEL(0 info, 1 warning, 2 error) MESSAGE -> QTS event log and stdout
	if [ -x "$CMD_LOG_TOOL" ]; then
		"$CMD_LOG_TOOL" -t"$1" -uSystem -p127.0.0.1 -mlocalhost -a "[$QPKG_DISPLAY_NAME] $2" >/dev/null 2>&1
	fi
	echo "$QPKG_DISPLAY_NAME: $2"
}

warn_log() { event 1 "$*"; }

set_progress() { echo "$1" > "$SYS_PROGRESS_FILE" 2>/dev/null; }

err_log() {  # a fatal error: restore what can be restored, tell, and stop
	restore_saved_config
	set_progress -1
	event 2 "$QPKG_DISPLAY_NAME $QPKG_VER was not installed: $*"
	exit 1
}

call_defined_routine() {  # call_defined_routine NAME: run a package_routines function when defined
	if command -v "$1" >/dev/null 2>&1; then
		"$1"
		cd "$SYS_EXTRACT_DIR" || exit 1
	fi
}

cfg_get() { "$CMD_GETCFG" "$QPKG_NAME" "$1" -d "$2" -f "$SYS_QPKG_CONFIG_FILE" 2>/dev/null; }
cfg_set() { "$CMD_SETCFG" "$QPKG_NAME" "$1" "$2" -f "$SYS_QPKG_CONFIG_FILE" || err_log "cannot write $SYS_QPKG_CONFIG_FILE"; }

version_ge() {  # version_ge A B: dotted version A >= B (numeric per part; missing parts are 0)
	_a=$1
	_b=$2
	while [ -n "$_a" ] || [ -n "$_b" ]; do
		_x=${_a%%.*}
		_y=${_b%%.*}
		case "$_a" in *.*) _a=${_a#*.} ;; *) _a="" ;; esac
		case "$_b" in *.*) _b=${_b#*.} ;; *) _b="" ;; esac
		_x=$(echo "$_x" | sed 's/[^0-9].*//')
		_y=$(echo "$_y" | sed 's/[^0-9].*//')
		[ "${_x:-0}" -gt "${_y:-0}" ] && return 0
		[ "${_x:-0}" -lt "${_y:-0}" ] && return 1
	done
	return 0
}

file_md5() { md5sum "$1" 2>/dev/null | cut -d' ' -f1; }

# ---- 1. init ----------------------------------------------------------------------------------------
[ -f ./qpkg.cfg ] || { echo "qinstall.sh: no qpkg.cfg in $SYS_EXTRACT_DIR"; set_progress -1; exit 1; }
# shellcheck source=/dev/null
. ./qpkg.cfg
QPKG_DISPLAY_NAME=${QPKG_DISPLAY_NAME:-$QPKG_NAME}
SYS_QPKG_DIR="$SYS_QPKG_INSTALL_PATH/$QPKG_NAME"
SYS_QPKG_SERVICE_PROGRAM="$SYS_QPKG_DIR/$QPKG_SERVICE_PROGRAM"
SYS_SAVED_CONFIG_DIR="$SYS_EXTRACT_DIR/.saved-config"
QPKG_BUILD=$(sed -n 's/^time *= *\([0-9]*\).*/\1/p' "$SYS_BUILT_INFO" 2>/dev/null)

restore_saved_config() {  # put back user-edited settings saved before extraction (no-op when none)
	[ -d "$SYS_SAVED_CONFIG_DIR" ] || return 0
	for _cfg in $QPKG_CONFIG; do
		if [ -f "$SYS_SAVED_CONFIG_DIR/$_cfg" ]; then
			mkdir -p "$(dirname "$SYS_QPKG_DIR/$_cfg")"
			cp -p "$SYS_SAVED_CONFIG_DIR/$_cfg" "$SYS_QPKG_DIR/$_cfg"
		fi
	done
}

set_progress 0
[ -f "$SYS_QPKG_DATA_FILE" ] || err_log "the package has no data archive (damaged download?)"
[ -f ./package_routines ] && . ./package_routines
call_defined_routine pkg_init

# ---- 2. requirements --------------------------------------------------------------------------------
if [ -n "$QTS_MINI_VERSION" ] && [ -f "$SYS_DEFAULT_ULINUX_CONF" ]; then
	_fw=$("$CMD_GETCFG" System Version -d "" -f "$SYS_DEFAULT_ULINUX_CONF" 2>/dev/null)
	if [ -n "$_fw" ] && ! version_ge "$_fw" "$QTS_MINI_VERSION"; then
		err_log "it needs firmware $QTS_MINI_VERSION or newer; this NAS runs $_fw"
	fi
fi
call_defined_routine pkg_check_requirement
set_progress 1

# ---- 3. pre-install ---------------------------------------------------------------------------------
SYS_QPKG_SERVICE_ENABLED=TRUE
if [ -d "$SYS_QPKG_DIR" ]; then
	_old_version=$(cfg_get Version "")
	log "${_old_version:-an earlier version} is already installed; upgrading to $QPKG_VER"
	SYS_QPKG_SERVICE_ENABLED=$(cfg_get Enable TRUE | tr 'a-z' 'A-Z')
	# Save settings files the user edited (md5 differs from the one recorded at install).
	for _cfg in $QPKG_CONFIG; do
		_file="$SYS_QPKG_DIR/$_cfg"
		[ -f "$_file" ] || continue
		_recorded=$(cfg_get "cfg:$_cfg" "")
		if [ "$_recorded" != "$(file_md5 "$_file")" ]; then
			mkdir -p "$(dirname "$SYS_SAVED_CONFIG_DIR/$_cfg")"
			cp -p "$_file" "$SYS_SAVED_CONFIG_DIR/$_cfg" || err_log "cannot save $_file"
			log "keeping your edited $_cfg"
		fi
	done
	if [ -f "$SYS_QPKG_SERVICE_PROGRAM" ]; then
		/bin/sh "$SYS_QPKG_SERVICE_PROGRAM" stop
	fi
	[ -f "$SYS_QPKG_DIR/.list" ] && mv -f "$SYS_QPKG_DIR/.list" "$SYS_QPKG_DIR/.oldlist"
fi
mkdir -p "$SYS_QPKG_DIR" || err_log "cannot create $SYS_QPKG_DIR"
call_defined_routine pkg_pre_install

# ---- 4. install -------------------------------------------------------------------------------------
tar -xzf "$SYS_QPKG_DATA_FILE" -C "$SYS_QPKG_DIR" || err_log "the data archive could not be extracted (damaged download or disk full?)"
tar -tzf "$SYS_QPKG_DATA_FILE" > "$SYS_QPKG_DIR/.list" || err_log "the data archive could not be listed"
restore_saved_config
call_defined_routine pkg_install
set_progress 2

# ---- 5. post-install --------------------------------------------------------------------------------
# Files the previous version shipped and this one does not.
if [ -f "$SYS_QPKG_DIR/.oldlist" ]; then
	while IFS= read -r _old; do
		case "$_old" in ''|.|./|*/) continue ;; esac
		grep -qxF "$_old" "$SYS_QPKG_DIR/.list" && continue
		_path="$SYS_QPKG_DIR/${_old#./}"
		[ -f "$_path" ] || [ -h "$_path" ] || continue
		rm -f "$_path"
	done < "$SYS_QPKG_DIR/.oldlist"
	rm -f "$SYS_QPKG_DIR/.oldlist"
fi

if [ -d "$SYS_RSS_IMG_DIR" ]; then
	for _icon in "" _80 _gray; do
		[ -f "$SYS_QPKG_DIR/.qpkg_icon$_icon.gif" ] &&
			cp -f "$SYS_QPKG_DIR/.qpkg_icon$_icon.gif" "$SYS_RSS_IMG_DIR/$QPKG_NAME$_icon.gif"
	done
fi

chmod 755 "$SYS_QPKG_SERVICE_PROGRAM" || err_log "the service program $QPKG_SERVICE_PROGRAM is missing"
mkdir -p "$SYS_INIT_DIR" "$SYS_STARTUP_DIR" "$SYS_SHUTDOWN_DIR"
ln -sf "$SYS_QPKG_SERVICE_PROGRAM" "$SYS_INIT_DIR/$QPKG_SERVICE_PROGRAM" || err_log "cannot link $SYS_INIT_DIR/$QPKG_SERVICE_PROGRAM"
rm -f "$SYS_STARTUP_DIR"/QS*"$QPKG_NAME" "$SYS_SHUTDOWN_DIR"/QK*"$QPKG_NAME"
ln -sf "$SYS_INIT_DIR/$QPKG_SERVICE_PROGRAM" "$SYS_STARTUP_DIR/QS${QPKG_RC_NUM}${QPKG_NAME}"
ln -sf "$SYS_INIT_DIR/$QPKG_SERVICE_PROGRAM" "$SYS_SHUTDOWN_DIR/QK$(printf '%03d' $((1000 - QPKG_RC_NUM)))${QPKG_NAME}"

# Register in /etc/config/qpkg.conf (keys as QDK's installer writes them).
[ -f "$SYS_QPKG_CONFIG_FILE" ] || : > "$SYS_QPKG_CONFIG_FILE"
[ -n "$QPKG_BUILD" ] && cfg_set Build "$QPKG_BUILD"
cfg_set Name "$QPKG_NAME"
cfg_set Display_Name "$QPKG_DISPLAY_NAME"
cfg_set Version "$QPKG_VER"
cfg_set Author "$QPKG_AUTHOR"
cfg_set QPKG_File "${QPKG_QPKG_FILE:-$QPKG_NAME.qpkg}"
cfg_set Date "$(date +%F)"
cfg_set Shell "$SYS_QPKG_SERVICE_PROGRAM"
cfg_set Install_Path "$SYS_QPKG_DIR"
cfg_set RC_Number "$QPKG_RC_NUM"
[ -n "$QPKG_TIMEOUT" ] && cfg_set Timeout "$QPKG_TIMEOUT"
[ -n "$QTS_MINI_VERSION" ] && cfg_set FW_Ver_Min "$QTS_MINI_VERSION"
[ -n "$QPKG_SERVICE_PIDFILE" ] && cfg_set Pid_File "$SYS_QPKG_DIR/$QPKG_SERVICE_PIDFILE"
cfg_set Distribution_Type "${QPKG_DISTRIBUTION_TYPE:-0}"
# The web UI declaration, as QDK's installer maps it (qpkg.cfg QPKG_WEBUI -> WebUI, ...).
[ -n "$QPKG_WEBUI" ] && cfg_set WebUI "$QPKG_WEBUI"
[ -n "$QPKG_DESKTOP_APP" ] && cfg_set Desktop "$QPKG_DESKTOP_APP"
[ -n "$QPKG_DESKTOP_APP_WIN_WIDTH" ] && cfg_set Win_Width "$QPKG_DESKTOP_APP_WIN_WIDTH"
[ -n "$QPKG_DESKTOP_APP_WIN_HEIGHT" ] && cfg_set Win_Height "$QPKG_DESKTOP_APP_WIN_HEIGHT"
[ -n "$QPKG_VISIBLE" ] && cfg_set Visible "$QPKG_VISIBLE"
for _cfg in $QPKG_CONFIG; do
	# Record the md5 of the default this version ships: a later upgrade keeps the file only if edited.
	_md5=$(tar -xzf "$SYS_QPKG_DATA_FILE" -O "./$_cfg" 2>/dev/null | md5sum | cut -d' ' -f1)
	[ -n "$_md5" ] && cfg_set "cfg:$_cfg" "$_md5"
done

# .uninstall.sh: what App Center (or `sh .uninstall.sh`) runs to remove the package.
{
	echo "#!/bin/sh"
	echo "# Generated by the $QPKG_NAME $QPKG_VER installer. Removes the package; NAS settings it changed stay."
	echo "PATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin:/usr/local/sbin:\$PATH"
	echo "QPKG_NAME=\"$QPKG_NAME\""
	echo "QPKG_DISPLAY_NAME=\"$QPKG_DISPLAY_NAME\""
	echo "SYS_QPKG_DIR=\"$SYS_QPKG_DIR\""
	echo "SYS_QPKG_INSTALL_PATH=\"$SYS_QPKG_INSTALL_PATH\""
	echo "SYS_QPKG_CONFIG_FILE=\"$SYS_QPKG_CONFIG_FILE\""
	echo "SERVICE=\"$SYS_INIT_DIR/$QPKG_SERVICE_PROGRAM\""
	cat <<'EOF'
CMD_LOG_TOOL=/sbin/log_tool
event() {
	if [ -x "$CMD_LOG_TOOL" ]; then
		"$CMD_LOG_TOOL" -t"$1" -uSystem -p127.0.0.1 -mlocalhost -a "[$QPKG_DISPLAY_NAME] $2" >/dev/null 2>&1
	fi
	echo "$QPKG_DISPLAY_NAME: $2"
}
if [ -f "$SYS_QPKG_DIR/exposure-guard.sh" ]; then
	/bin/sh "$SYS_QPKG_DIR/exposure-guard.sh" stop
	/bin/sh "$SYS_QPKG_DIR/exposure-guard.sh" remove >/dev/null 2>&1
fi
EOF
	echo "$PKG_PRE_REMOVE"
	cat <<'EOF'
case "$SYS_QPKG_DIR" in
	*/.qpkg/*) rm -rf "$SYS_QPKG_DIR" ;;
esac
[ -h "$SERVICE" ] && rm -f "$SERVICE"
rm -f /etc/rcS.d/QS*"$QPKG_NAME" /etc/rcK.d/QK*"$QPKG_NAME"
rm -f /home/httpd/RSS/images/"$QPKG_NAME".gif /home/httpd/RSS/images/"$QPKG_NAME"_80.gif \
	/home/httpd/RSS/images/"$QPKG_NAME"_gray.gif
EOF
	echo "$PKG_MAIN_REMOVE"
	cat <<'EOF'
# Unregister (App Center does this too; harmless when already done).
if [ -x /sbin/rmcfg ]; then
	/sbin/rmcfg "$QPKG_NAME" -f "$SYS_QPKG_CONFIG_FILE" >/dev/null 2>&1
fi
EOF
	echo "$PKG_POST_REMOVE"
	echo "exit 0"
} > "$SYS_QPKG_DIR/.uninstall.sh" || err_log "cannot write $SYS_QPKG_DIR/.uninstall.sh"
chmod 755 "$SYS_QPKG_DIR/.uninstall.sh"

call_defined_routine pkg_post_install

# ---- 6. enable and start ----------------------------------------------------------------------------
if [ "$SYS_QPKG_SERVICE_ENABLED" = "TRUE" ]; then
	cfg_set Enable TRUE
	if ! /bin/sh "$SYS_INIT_DIR/$QPKG_SERVICE_PROGRAM" start; then
		cfg_set Enable FALSE
		warn_log "installed, but the service did not start; it was disabled. See $SYS_QPKG_DIR/var/exposure-guard.log"
	fi
else
	cfg_set Enable FALSE
	log "left disabled, as it was before the upgrade"
fi

cfg_set Status complete  # what App Center and real packages write once an install went through
event 0 "installed $QPKG_DISPLAY_NAME $QPKG_VER in $SYS_QPKG_DIR."
set_progress 3
exit 0
