# Sourced by every command on the GPU machine after staging: where the staged vLLM lives, no hub, and a
# model cache in /tmp (kept while the machine stays warm; the synthetic models are rebuilt otherwise).
export PYTHONPATH="/tmp/vllm-site${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 KVLAB_CACHE_DIR=/tmp/kvlab-cache
