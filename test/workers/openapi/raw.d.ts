/** Vite's `?raw` imports (a file's text), as the OpenAPI tests read docs/api.md. */
declare module '*?raw' {
  const text: string;
  export default text;
}
