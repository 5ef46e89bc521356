"""Video export of a trajectory by re-simulation: H.264 + AAC at exactly 60 fps, speech and game sound in sync.

    export_video(store, "mspacman_1QQ3LEWANF_1", "mspacman_1QQ3LEWANF_1_final.mp4")

The picture is never taken from a screenshot: the trajectory is re-simulated from its seed and logged actions
(`server.core.replay.replay`), and every frame is checked against the log while it is produced, so a trajectory
that does not verify fails the export with the `ReplayDivergence` message (and leaves no file behind).

Picture. Each re-simulated screen is taken as 160x210 RGB (ALE's getScreenRGB, the NTSC palette) and is piped raw
into ffmpeg (`imageio_ffmpeg.get_ffmpeg_exe()`), which scales it with nearest neighbour *inside ffmpeg*, in one
swscale pass: the colour conversion runs at the Atari's size with every pixel's own chroma (`full_chroma_inp`), then
the picture is scaled (`flags=neighbor`) and subsampled to yuv420p, which stays crisp because at even scales every
Atari pixel covers whole 2x2 chroma blocks. The Atari's pixels are twice as wide as high (as the browser client shows
them), so scale s gives 320*s x 210*s. The default, 2 (640x420), is sharp and at the right aspect at its own size
and exports at about 10x real time on one core; 4 (1280x840) stays sharp at full screen but x264's time grows with
the pixels (about 3x real time). x264 `ultrafast` at constant quantiser 16 (flat Atari frames cost little size for it;
nearly every pixel comes out exact), BT.709 tagged. With one job x264 runs on one thread; see docs/benchmarks.md
"Video export: where the time goes".

Overlay (`overlay=True`): frame, score and action drawn with a 3x5 bitmap font into an 8-row strip added *below*
the 210 game rows, before scaling (so the game is never covered, and no font file is needed: the text is the same on
every machine). The video is then 218*s rows high.

Sound. One 48 kHz PCM16 WAV is prepared in numpy and given to ffmpeg as a file; it is exactly frames/60 s long, the
same as the video (which is 60 fps by construction, never guessed from the audio's length):
- game sound: `game_audio.wav` holds 512 samples per frame at 30720 Hz, so frame f's sound starts at f/60 s;
  resampled to 48 kHz by linear interpolation.
- speech: `speech.wav`'s sample `speech_sample[f]` was being captured when frame f was painted. The speech is laid on
  the video's 60 fps timeline at 1x in segments (`server.core.alignment.speech_segments`): it plays unbroken while
  the logged mapping stays within a frame of the 1x line, and is re-cut where it moves further for good (a pause,
  where the speech of the paused time is skipped; the display falling behind). Every sample is heard with the frame
  that was on screen when it was spoken, to within about a frame, without the warble or the clicks a per-frame time
  warp would add from paint-time jitter. The browser replay page lays the speech out with the same segments.
- mixed by default (sum, clipped), or `stereo=True`: speech left, game right.

Modules: `encode` (the export and ffmpeg), `sound` (the soundtrack), `font` (the overlay); frames.csv and the WAV
files are read by `server.core.reader`.
"""

from ..errors import VideoExportError
from .encode import (
    BATCH_FRAMES,
    CONTAINERS,
    DEFAULT_SCALE,
    PIXEL_ASPECT,
    QP,
    X264_PRESETS,
    ExportResult,
    default_output,
    export_video,
    ffmpeg_command,
    output_size,
    segment_bounds,
)
from .font import OVERLAY_ROWS, draw_text, overlay_strip
from .sound import AUDIO_RATE, SoundSources, audio_blocks, load_sound, render_audio, write_audio_wav

__all__ = [
    "AUDIO_RATE",
    "BATCH_FRAMES",
    "CONTAINERS",
    "DEFAULT_SCALE",
    "OVERLAY_ROWS",
    "PIXEL_ASPECT",
    "QP",
    "X264_PRESETS",
    "ExportResult",
    "SoundSources",
    "VideoExportError",
    "audio_blocks",
    "default_output",
    "draw_text",
    "export_video",
    "ffmpeg_command",
    "load_sound",
    "output_size",
    "overlay_strip",
    "render_audio",
    "segment_bounds",
    "write_audio_wav",
]
