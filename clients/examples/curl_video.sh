#!/usr/bin/env bash
# Ask about a video with curl.
#   ./curl_video.sh [BASE_URL] [MODEL]          VIDEO=clip.mp4 to send a file (default: a generated 2 s clip)
# BASE_URL defaults to http://127.0.0.1:8000, MODEL to the first of /v1/models; PYTHON is a python with this package.
set -euo pipefail
BASE_URL=${1:-${BASE_URL:-http://127.0.0.1:8000}}
PYTHON=${PYTHON:-python3}
MODEL=${2:-${MODEL:-$(curl -sS --fail "$BASE_URL/v1/models" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')}}

if [[ -z "${VIDEO:-}" ]]; then  # a red square crossing a grey field, 8 frames at 4 fps, encoded by clients.messages
  VIDEO=$(mktemp --suffix .mp4)
  trap 'rm -f "$VIDEO"' EXIT
  "$PYTHON" -c 'import sys; from clients.examples._common import sample_video; open(sys.argv[1], "wb").write(sample_video())' "$VIDEO"
fi
URL=$("$PYTHON" -c 'import base64,mimetypes,sys; p=sys.argv[1]; print("data:"+(mimetypes.guess_type(p)[0] or "video/mp4")+";base64,"+base64.b64encode(open(p,"rb").read()).decode())' "$VIDEO")

# fps and max_pixels (per frame) on the video_url object are per-video Qwen controls; usage reports video_tokens.
curl -sS --fail-with-body "$BASE_URL/v1/chat/completions" -H 'Content-Type: application/json' --data-binary @- <<JSON
{
  "model": "$MODEL",
  "messages": [{"role": "user", "content": [
    {"type": "video_url", "video_url": {"url": "$URL", "fps": 2, "max_pixels": 16384}},
    {"type": "text", "text": "What happens in this video?"}]}],
  "max_tokens": ${MAX_TOKENS:-64}
}
JSON
echo
