"""Region descriptions (DynRefer's views, DetCLIPv3's `phrase|category|parent` labels): what the MLLM
is shown (`views`, `prompts`), how its answer is read (`parsing`) and how a proposed label is checked
against a memory (`check`). Light to import: PIL and the standard library only."""
