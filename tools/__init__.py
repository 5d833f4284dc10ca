"""Development tooling (not shipped with tracehop): run from the repository root, e.g. `make audit`."""
