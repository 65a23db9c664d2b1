"""Stream the answer as it is generated, then the usage (stream_options.include_usage).

python clients/examples/streaming.py --url http://127.0.0.1:8000 [--image PATH_OR_URL]
"""

from __future__ import annotations

from clients.examples._common import connect, parser, print_usage, sample_image
from clients.messages import image_part, user_message


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--image", help="a local file or URL (default: a generated picture)")
    args = p.parse_args()
    client, model = connect(args)

    stream = client.chat.completions.create(
        model=model,
        messages=[user_message(image_part(args.image or sample_image()), "Tell a short story about this image.")],
        max_tokens=args.max_tokens,
        stream=True,
        stream_options={"include_usage": True},  # one last chunk, with no choices, carries the usage
    )
    chunks, usage = 0, None
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                chunks += 1
                print(choice.delta.content, end="", flush=True)
        usage = chunk.usage or usage
    print(f"\nchunks: {chunks}")
    print_usage(usage)


if __name__ == "__main__":
    main()
