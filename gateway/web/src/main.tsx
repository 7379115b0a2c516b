import { render } from "preact";
import "./app";
import { loadConfig } from "./config";
import { App } from "./ui/App";
import "./styles.css";

const root = document.getElementById("app");
if (root) {
  const config = await loadConfig();
  render(<App config={config} />, root);
}
