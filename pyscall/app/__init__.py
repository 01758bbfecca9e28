"""The SCALL streaming application built on the library: data loaders and streams, models, metrics, size
policies and the agent, the per-segment trainer, the CLI and its reports. `import pyscall` loads none of it."""
