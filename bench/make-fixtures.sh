#!/usr/bin/env bash
# The benchmark's publish fixtures: 10 s of 720p30 test pattern + 48 kHz tone, H.264 with a 2 s
# GOP (like OBS's keyframe interval 2) and AAC, at the bitrates the scenarios name. Made on
# demand (a few MB each), never committed.
set -euo pipefail
out="${1:-bench/.cache}"
mkdir -p "$out"
make_one() {
    local name="$1" video="$2" audio="$3"
    [ -s "$out/$name.flv" ] && return
    ffmpeg -hide_banner -loglevel error -y \
        -f lavfi -i "testsrc2=size=1280x720:rate=30" -f lavfi -i "sine=frequency=440:sample_rate=48000" -t 10 \
        -c:v libx264 -preset veryfast -profile:v main -pix_fmt yuv420p -b:v "$video" -maxrate "$video" \
        -bufsize "$video" -g 60 -keyint_min 60 -sc_threshold 0 -c:a aac -b:a "$audio" -ac 2 \
        -f flv "$out/$name.flv.tmp"
    mv "$out/$name.flv.tmp" "$out/$name.flv"
    echo "made $out/$name.flv"
}
make_one 600k 536k 64k
make_one 2500k 2372k 128k
make_one 3000k 2872k 128k
