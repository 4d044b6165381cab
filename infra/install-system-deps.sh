#!/usr/bin/env bash
# Debian packages the project needs: a JDK 17, Maven, Python's venv module, nginx (the serving
# layer's load balancer), Chromium (the dashboard's browser test), Graphviz (`make docs` renders
# docs/architecture.svg with its `dot`), Prometheus with promtool and the Pushgateway (the alert
# rules' tests and the monitoring test). Installs only what is missing, so it is a quick no-op on
# a machine that has them.
set -euo pipefail
need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
[ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v dot >/dev/null 2>&1 || need+=(graphviz)
# Without their recommends (node-exporter and the like); their systemd units are not used.
lean=()
command -v promtool >/dev/null 2>&1 || lean+=(prometheus)
command -v prometheus-pushgateway >/dev/null 2>&1 || lean+=(prometheus-pushgateway)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ ${#lean[@]} -gt 0 ]; then
  echo "installing Debian packages: ${lean[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  [ ${#need[@]} -gt 0 ] || $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${lean[@]}" >/dev/null
fi
