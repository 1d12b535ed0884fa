// Swagger UI over this server's own document. A file rather than an inline
// script, so the page's Content-Security-Policy can forbid inline scripts.
"use strict";
window.addEventListener("DOMContentLoaded", () => {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    // The OAuth2 password form sends username and password in the body; this
    // API has no client credentials to send.
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    tryItOutEnabled: false,
    displayRequestDuration: true,
  });
  window.ui.initOAuth({ usePkceWithAuthorizationCodeGrant: false });
});
