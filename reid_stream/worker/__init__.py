"""The worker process: its shared runtime, and the Faust app that runs the stages, the archiver and the views."""
