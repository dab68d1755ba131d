// The graft extension: highlighting comes from the TextMate grammar; everything else
// (diagnostics, hover, go to definition, completion, formatting, semantic tokens)
// from `graft lsp`, started over stdio.
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const command = vscode.workspace.getConfiguration("graft").get("server.path") || "graft";
  const server = { command, args: ["lsp"] };
  client = new LanguageClient(
    "graft",
    "graft language server",
    { run: server, debug: server },
    { documentSelector: [{ scheme: "file", language: "graft" }] }
  );
  context.subscriptions.push({ dispose: () => client && client.stop() });
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
