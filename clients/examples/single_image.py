"""Ask about one image with the openai SDK.

python clients/examples/single_image.py --url http://127.0.0.1:8000 [--image PATH_OR_URL] [--max-pixels N]
"""

from __future__ import annotations

from clients.examples._common import connect, parser, print_usage, sample_image
from clients.messages import image_part, user_message


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--image", help="a local file or an http(s) URL (default: a generated picture)")
    p.add_argument("--max-pixels", type=int, help="pixel budget for the image (fewer pixels, fewer tokens)")
    args = p.parse_args()
    client, model = connect(args)

    # A local file or PIL image is inlined as a data URL; the controls go on the image_url object.
    image = image_part(args.image or sample_image(), max_pixels=args.max_pixels)
    reply = client.chat.completions.create(
        model=model,
        messages=[user_message(image, "Describe this image in one sentence.")],
        max_tokens=args.max_tokens,
    )
    print(reply.choices[0].message.content)
    print_usage(reply.usage)  # prompt_tokens_details.image_tokens: what the image cost


if __name__ == "__main__":
    main()
