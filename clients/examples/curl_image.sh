#!/usr/bin/env bash
# Ask about one image with curl.
#   ./curl_image.sh [BASE_URL] [MODEL]          IMAGE=photo.jpg to send a file (default: a generated PNG)
# BASE_URL defaults to http://127.0.0.1:8000, MODEL to the first of /v1/models; PYTHON is a python with Pillow.
set -euo pipefail
BASE_URL=${1:-${BASE_URL:-http://127.0.0.1:8000}}
PYTHON=${PYTHON:-python3}
MODEL=${2:-${MODEL:-$(curl -sS --fail "$BASE_URL/v1/models" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')}}

if [[ -n "${IMAGE:-}" ]]; then  # a file, as a data URL with its MIME type
  URL=$("$PYTHON" -c 'import base64,mimetypes,sys; p=sys.argv[1]; print("data:"+(mimetypes.guess_type(p)[0] or "image/png")+";base64,"+base64.b64encode(open(p,"rb").read()).decode())' "$IMAGE")
else  # a 64x48 red PNG made on the spot
  URL=data:image/png\;base64,$("$PYTHON" -c 'import base64,io; from PIL import Image; b=io.BytesIO(); Image.new("RGB",(64,48),"red").save(b,"PNG"); print(base64.b64encode(b.getvalue()).decode())')
fi

# max_pixels on the image_url object is a per-image Qwen control; the answer's usage reports image_tokens.
curl -sS --fail-with-body "$BASE_URL/v1/chat/completions" -H 'Content-Type: application/json' --data-binary @- <<JSON
{
  "model": "$MODEL",
  "messages": [{"role": "user", "content": [
    {"type": "image_url", "image_url": {"url": "$URL", "max_pixels": 262144}},
    {"type": "text", "text": "What is in this image?"}]}],
  "max_tokens": ${MAX_TOKENS:-64}
}
JSON
echo
