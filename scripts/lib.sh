# Sourced by the scripts: run a command as root whoever starts them.
#   as_root CMD...   root already: runs CMD; otherwise through sudo when it is installed;
#                    otherwise one line saying what needs root, and status 1.
#   can_be_root      true when we are root or sudo is installed
can_be_root() {
    [ "$(id -u)" = 0 ] || command -v sudo >/dev/null
}

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        echo "$(basename "$0"): this step needs root and sudo is not installed: run it as root" >&2
        return 1
    fi
}
