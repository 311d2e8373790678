"""edgecut: tailor pre-trained multi-task models to the tasks and budget of each edge device.

`edgecut.agent` runs on the device (no torch); `edgecut.server` tailors models (torch);
`edgecut.v1` is the generated wire contract (from protos/edgecut/v1).
"""

__version__ = "0.1.0"
