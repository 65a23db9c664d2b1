"""A conversation about an image: the history (image included) is sent again with every turn.

python clients/examples/multi_turn.py --url http://127.0.0.1:8000 [--image PATH_OR_URL]
"""

from __future__ import annotations

from clients.examples._common import connect, parser, print_usage, sample_image
from clients.messages import Conversation, image_part


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--image", help="a local file or URL (default: a generated picture)")
    args = p.parse_args()
    client, model = connect(args)

    chat = Conversation(system="You are a concise assistant.")
    chat.user(image_part(args.image or sample_image()), "What shapes are in this image?")
    for turn, follow_up in enumerate(["Which one is larger?", None], start=1):
        reply = client.chat.completions.create(model=model, messages=chat.messages, max_tokens=args.max_tokens)
        answer = reply.choices[0].message.content
        print(f"turn {turn}: {answer}")
        print_usage(reply.usage)
        chat.assistant(answer)
        if follow_up:
            chat.user(follow_up)


if __name__ == "__main__":
    main()
