// requests: [{"path": "/"}, {"method": "POST", "path": "/upload", "headers": {"Content-Type": "multipart/form-data; boundary=XyZ"}, "body": "--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nHello form\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nfile body\r\n--XyZ--\r\n"}]
// Blob, File and FormData: construction, slicing, multipart round trips (boundaries are random, so only parsed results are shown).
export default {
  async fetch(request) {
    if (new URL(request.url).pathname === "/upload") {
      const form = await request.formData();
      const file = form.get("file");
      return Response.json({ title: form.get("title"), file: [file.name, file.type, file.size, await file.text()], keys: [...form.keys()] });
    }
    const out = {};
    const blob = new Blob(["ab", new Uint8Array([99, 100]), new Blob(["ef"])], { type: "Text/Plain" });
    out.blob = { size: blob.size, type: blob.type, text: await blob.text(), slice: await blob.slice(1, -1).text(), negative: await blob.slice(-2).text() };
    const file = new File(["content"], "name.txt", { type: "text/plain", lastModified: 42 });
    out.file = { name: file.name, size: file.size, type: file.type, lastModified: file.lastModified, isBlob: file instanceof Blob };
    const form = new FormData();
    form.append("a", "1");
    form.append("a", "2");
    form.set("b", "only");
    form.append("upload", new Blob(["blob data"], { type: "application/octet-stream" }), "data.bin");
    out.form = { a: form.getAll("a"), b: form.get("b"), has: [form.has("a"), form.has("zz")], keys: [...form.keys()] };
    form.delete("a");
    out.afterDelete = [...form.keys()];
    const response = new Response(form);
    out.contentType = response.headers.get("content-type").startsWith("multipart/form-data; boundary=");
    const parsed = await response.formData();
    const upload = parsed.get("upload");
    out.roundTrip = { b: parsed.get("b"), upload: [upload.name, upload.type, await upload.text()] };
    const encoded = await new Response(new URLSearchParams({ x: "1 2", y: "é" })).formData();
    out.urlencoded = [...encoded];
    return Response.json(out);
  },
};
