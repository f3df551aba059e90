// The component's entry: the prelude first, then the module.
import "./prelude.js";
export * from "./normalizer.js";
