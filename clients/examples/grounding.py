"""Ask Qwen3-VL to locate things, parse its boxes (0-1000 relative) into pixels, and draw them.

python clients/examples/grounding.py --url http://127.0.0.1:8000 [--image PATH] [--out boxes.png]
"""

from __future__ import annotations

from PIL import Image

from clients.examples._common import connect, parser, print_usage, sample_image
from clients.grounding import draw, parse_boxes
from clients.messages import image_part, user_message

PROMPT = 'Locate every red square and blue disc. Answer in JSON: [{"bbox_2d": [x1, y1, x2, y2], "label": "..."}].'


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--image", help="a local image file (default: a generated picture)")
    p.add_argument("--out", help="write the image with the boxes drawn here")
    args = p.parse_args()
    client, model = connect(args)

    image = Image.open(args.image) if args.image else sample_image()
    reply = client.chat.completions.create(
        model=model, messages=[user_message(image_part(image), PROMPT)], max_tokens=args.max_tokens
    )
    answer = reply.choices[0].message.content or ""
    print(answer)
    boxes = parse_boxes(answer, image.width, image.height)  # pixels of the original image
    print(f"boxes: {len(boxes)}")
    for box in boxes:
        print(f"  {box.label}: {box.as_tuple()}")
    if args.out:
        draw(image, boxes).save(args.out)
    print_usage(reply.usage)


if __name__ == "__main__":
    main()
