"""Ask about a video: a file or URL (sampled by the server), or numpy frames sent as they are.

python clients/examples/video.py --url http://127.0.0.1:8000 [--video PATH_OR_URL] [--fps 2] [--frames]
"""

from __future__ import annotations

from clients.examples._common import connect, parser, print_usage, sample_frames, sample_video
from clients.messages import user_message, video_part


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--video", help="an mp4/webm/... file or URL (default: a generated 2 s clip)")
    p.add_argument("--fps", type=float, default=2.0, help="frames the server samples per second of video")
    p.add_argument("--frames", action="store_true", help="send generated numpy frames as a frame list instead")
    args = p.parse_args()
    client, model = connect(args)

    if args.frames:
        # {"type": "video", "video": [frame data URLs], "sample_fps": 4}: every frame is used, taken at 4 fps.
        video = video_part(sample_frames(), sample_fps=4.0, max_pixels=128 * 128)
    else:
        # {"type": "video_url", "video_url": {"url": ..., "fps": 2, "max_pixels": ...}}: the server samples the clip.
        video = video_part(args.video or sample_video(), fps=args.fps, max_pixels=128 * 128)
    reply = client.chat.completions.create(
        model=model,
        messages=[user_message(video, "What happens in this video?")],
        max_tokens=args.max_tokens,
    )
    print(reply.choices[0].message.content)
    print_usage(reply.usage)  # prompt_tokens_details.video_tokens: what the video cost


if __name__ == "__main__":
    main()
