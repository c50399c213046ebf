"""The live pipeline behind ``rtseg run``: sources, stages, sinks and the threaded runner."""

from rtseg.pipeline.config import RunConfig
from rtseg.pipeline.frames import Frame
from rtseg.pipeline.overlay import Overlay
from rtseg.pipeline.launch import run
from rtseg.pipeline.runner import Pipeline
from rtseg.pipeline.serve import LiveServer
from rtseg.pipeline.sinks import MaskSink, Sink, VideoSink, WindowSink
from rtseg.pipeline.sources import ReconnectPolicy, Source, open_source
from rtseg.pipeline.stats import format_status

__all__ = ["Frame", "LiveServer", "MaskSink", "Overlay", "Pipeline", "ReconnectPolicy",
           "RunConfig", "Sink", "Source", "VideoSink", "WindowSink", "format_status",
           "open_source", "run"]
