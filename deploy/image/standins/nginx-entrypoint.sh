#!/bin/sh
# The part of the official nginx image's entry point that docker-compose.yml relies on:
#   /docker-entrypoint.d/*.envsh       sourced in order, when executable (they export variables)
#   /etc/nginx/templates/*.template    written to NGINX_ENVSUBST_OUTPUT_DIR (default
#                                      /etc/nginx/conf.d) without the suffix, with the variables
#                                      of the environment substituted and nginx's own left alone
set -eu

for script in $(find /docker-entrypoint.d -follow -type f -name '*.envsh' 2>/dev/null | sort); do
    if [ -x "$script" ]; then
        echo "nginx-entrypoint: sourcing $script" >&2
        # shellcheck disable=SC1090
        . "$script"
    fi
done

output=${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}
defined=$(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/${\1}/p' | paste -sd ' ')
for template in /etc/nginx/templates/*.template; do
    [ -f "$template" ] || continue
    name=$(basename "$template" .template)
    envsubst "$defined" <"$template" >"$output/$name"
    echo "nginx-entrypoint: $template -> $output/$name" >&2
done

exec "$@"
