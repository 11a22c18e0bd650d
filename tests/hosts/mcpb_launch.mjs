// The launch command an MCPB host derives from an unpacked bundle and the user's answers, computed
// by the MCPB package's own getMcpConfigForManifest (variable substitution, array expansion, defaults).
// Usage: node mcpb_launch.mjs MCPB_PACKAGE_DIR EXTENSION_DIR ANSWERS_JSON_FILE HOME_DIR
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [packageDir, extensionDir, answersFile, home] = process.argv.slice(2);
const entry = join(packageDir, "node_modules", "@anthropic-ai", "mcpb", "dist", "index.js");
const { getMcpConfigForManifest } = await import(pathToFileURL(entry).href);
const manifest = JSON.parse(readFileSync(join(extensionDir, "manifest.json"), "utf8"));
const config = await getMcpConfigForManifest({
  manifest,
  extensionPath: extensionDir,
  systemDirs: { HOME: home, DESKTOP: join(home, "Desktop"), DOCUMENTS: join(home, "Documents") },
  userConfig: JSON.parse(readFileSync(answersFile, "utf8")),
  pathSeparator: "/",
});
process.stdout.write(JSON.stringify(config ?? null));
