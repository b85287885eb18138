# Sourced by every command on the GPU machine after staging: where the staged vLLM lives, no hub, and a
# model cache in /tmp (kept while the machine stays warm; the synthetic models are rebuilt otherwise).
# KVLAB_VLLM_SITE picks the site: by default the one the last .stage/cK/collect.sh unpacked (it writes its
# path, e.g. /tmp/vllm-site-033, to /tmp/kvlab-vllm-site), else 0.24's /tmp/vllm-site (.stage/sK).
# The staged torch 2.14 runs on the image's cuDNN 9.19 (built against 9.24; same major, symbols present):
# torch's minor-version check would refuse it, hence PYTORCH_SKIP_CUDNN_COMPATIBILITY_CHECK (a no-op on 0.24).
KVLAB_VLLM_SITE="${KVLAB_VLLM_SITE:-$(cat /tmp/kvlab-vllm-site 2>/dev/null || echo /tmp/vllm-site)}"
export KVLAB_VLLM_SITE PYTHONPATH="$KVLAB_VLLM_SITE${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 \
  KVLAB_CACHE_DIR=/tmp/kvlab-cache PYTORCH_SKIP_CUDNN_COMPATIBILITY_CHECK=1
