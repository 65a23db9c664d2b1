"""Compare several images in one request, each with its own budget.

python clients/examples/multi_image.py --url http://127.0.0.1:8000 [--image A --image B ...]
"""

from __future__ import annotations

from clients.examples._common import connect, parser, print_usage, sample_image
from clients.messages import image_part, user_message


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--image", action="append", help="a local file or URL; repeat it (default: two generated pictures)")
    args = p.parse_args()
    client, model = connect(args)

    sources = args.image or [sample_image(seed=1), sample_image(seed=2)]
    # Per-item controls: the first image at a fixed budget, the others at OpenAI's "low" detail (<= 256 tokens each).
    parts = [image_part(sources[0], max_pixels=256 * 256)] + [image_part(s, detail="low") for s in sources[1:]]
    reply = client.chat.completions.create(
        model=model,
        messages=[user_message(*parts, "What differs between these images?")],
        max_tokens=args.max_tokens,
    )
    print(reply.choices[0].message.content)
    print_usage(reply.usage)


if __name__ == "__main__":
    main()
