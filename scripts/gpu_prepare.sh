#!/usr/bin/env bash
# Prepare .gpu/ for scripts/gpu_check.sh on a GPU machine WITHOUT network access (run it here, where
# pip and the data are reachable): the wheels that such a machine lacks (papermill, nbconvert,
# ipykernel, ipywidgets and their dependencies, for Python ${GPU_PYTHON:-3.12}) and the offline data
# ($WIKI_DIR, $GLUE_DIR). .gpu/ is git-ignored; carry it to the GPU machine with the repository.
#   GPU_HAS="attrs certifi ..."  packages the GPU machine already has (not downloaded; default below)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${WIKI_DIR:?set WIKI_DIR to the WikiExtractor folder}" "${GLUE_DIR:?set GLUE_DIR to the GLUE folder}"
py=${GPU_PYTHON:-3.12}
# What a CUDA image with torch + transformers usually has already (a PyTorch image's pip list).
has=${GPU_HAS:-"attrs certifi charset_normalizer click idna jinja2 markupsafe packaging psutil pygments
  python_dateutil pyyaml requests tqdm typing_extensions urllib3"}
rm -rf .gpu/whl && mkdir -p .gpu/whl .gpu/data
python3 -m pip download -q --only-binary=:all: --python-version "$py" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d .gpu/whl papermill nbconvert nbformat ipykernel ipywidgets
for name in $has jedi parso debugpy widgetsnbextension; do  # optional imports of IPython, ipykernel, ipywidgets
  rm -f .gpu/whl/"$name"-*.whl
done
rm -rf .gpu/data/wikipedia .gpu/data/glue_data
cp -r "$WIKI_DIR" .gpu/data/wikipedia
mkdir -p .gpu/data/glue_data
(cd "$GLUE_DIR" && find . -name '*.tsv' -exec cp --parents {} "$OLDPWD/.gpu/data/glue_data/" \;)
du -sh .gpu/whl .gpu/data
