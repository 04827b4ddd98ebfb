// requests: [{"path": "/sw?name=x"}, {"method": "POST", "path": "/sw-post", "body": "posted"}]
// The service-worker form: addEventListener("fetch", event => event.respondWith(...)).
addEventListener("fetch", (event) => {
  event.respondWith(handle(event.request));
});

async function handle(request) {
  const url = new URL(request.url);
  const body = request.method === "POST" ? await request.text() : null;
  return new Response(JSON.stringify({ path: url.pathname, name: url.searchParams.get("name"), body, isFetchEvent: typeof FetchEvent }), {
    headers: { "content-type": "application/json" },
  });
}
