// The demo platform's Outbound Worker: every fetch() a tenant makes arrives here. It blocks the hosts
// in BLOCKED_HOSTS (comma-separated; `*.example.com` for any subdomain) and forwards the rest with an
// API credential the tenants never see, and the tenant's name that the dispatcher passed
// (`customer_name`, an outbound parameter, read from env like any binding).
function matches(host, pattern) {
  return pattern.startsWith("*.") ? host.endsWith(pattern.slice(1)) : host === pattern;
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const blocked = (env.BLOCKED_HOSTS || "").split(",").map((entry) => entry.trim()).filter(Boolean);
    if (blocked.some((pattern) => matches(url.hostname, pattern))) {
      console.warn(`blocked ${request.method} ${request.url}`);
      return new Response(`blocked by outbound credential policy: ${url.hostname}`, { status: 403 });
    }
    const headers = new Headers(request.headers);
    headers.delete("authorization");
    if (env.API_TOKEN) headers.set("Authorization", `Bearer ${env.API_TOKEN}`);
    if (env.customer_name) headers.set("X-Customer", env.customer_name);
    console.log(`credential added for ${request.method} ${request.url} (customer ${env.customer_name || "-"}, ${env.plan ? "pro" : "free"} plan)`);
    return fetch(new Request(request, { headers }));
  },
};
