// The demo platform's dispatch Worker, as Cloudflare's Workers for Platforms docs write one: it picks
// the tenant by the first label of the Host, passes the tenant's name to the Outbound Worker, and
// answers for tenants that are missing or over a limit. `env.dispatcher` is the namespace.
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (request.method === "GET" && url.pathname === "/__dispatcher/health") {
      return new Response("dispatcher ok");
    }
    const tenant = url.hostname.split(".")[0];
    const limits = {};
    if (env.CPU_MS) limits.cpuMs = Number(env.CPU_MS);
    if (env.SUB_REQUESTS) limits.subRequests = Number(env.SUB_REQUESTS);
    try {
      const worker = env.dispatcher.get(tenant, {}, { outbound: { customer_name: tenant }, limits });
      const response = await worker.fetch(request);
      const answer = new Response(response.body, response);
      answer.headers.set("X-Dispatched-By", "dispatcher");
      return answer;
    } catch (error) {
      if (error.message.startsWith("Worker not found")) {
        return new Response(`no such tenant: ${tenant}`, { status: 404 });
      }
      if (error.outcome) {
        console.warn(`tenant ${tenant} hit a limit: ${error.outcome}`);
        return Response.json({ error: "tenant limit", outcome: error.outcome, tenant }, { status: 503 });
      }
      console.error(`dispatch to ${tenant} failed: ${error.message}`);
      return new Response(`dispatch failed: ${error.message}`, { status: 502 });
    }
  },
};
