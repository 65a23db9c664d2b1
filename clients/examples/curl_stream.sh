#!/usr/bin/env bash
# Stream an answer about an image with curl: Server-Sent Events, one "data: {chunk}" line each, then "data: [DONE]".
#   ./curl_stream.sh [BASE_URL] [MODEL]          IMAGE=photo.jpg to send a file (default: a generated PNG)
# BASE_URL defaults to http://127.0.0.1:8000, MODEL to the first of /v1/models; PYTHON is a python with Pillow.
set -euo pipefail
BASE_URL=${1:-${BASE_URL:-http://127.0.0.1:8000}}
PYTHON=${PYTHON:-python3}
MODEL=${2:-${MODEL:-$(curl -sS --fail "$BASE_URL/v1/models" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')}}

if [[ -n "${IMAGE:-}" ]]; then
  URL=$("$PYTHON" -c 'import base64,mimetypes,sys; p=sys.argv[1]; print("data:"+(mimetypes.guess_type(p)[0] or "image/png")+";base64,"+base64.b64encode(open(p,"rb").read()).decode())' "$IMAGE")
else
  URL=data:image/png\;base64,$("$PYTHON" -c 'import base64,io; from PIL import Image; b=io.BytesIO(); Image.new("RGB",(64,48),"blue").save(b,"PNG"); print(base64.b64encode(b.getvalue()).decode())')
fi

# -N: print events as they arrive; include_usage adds a last chunk with the token counts.
curl -sS -N --fail-with-body "$BASE_URL/v1/chat/completions" -H 'Content-Type: application/json' --data-binary @- <<JSON
{
  "model": "$MODEL",
  "stream": true,
  "stream_options": {"include_usage": true},
  "messages": [{"role": "user", "content": [
    {"type": "image_url", "image_url": {"url": "$URL"}},
    {"type": "text", "text": "Describe this image."}]}],
  "max_tokens": ${MAX_TOKENS:-64}
}
JSON
