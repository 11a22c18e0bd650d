"""Distribution files derived from the code: the Claude Desktop bundle's manifest (`bundle/manifest.json`),
the MCP registry entry (`server.json`), and the bundle build (`python -m rar_tools.release`).

Both JSON files are written from the request models, the workflow prompt and `Settings`, so they list
exactly the tools, prompts, flags and variables the server has; tests compare the committed files
with freshly generated ones.
"""
