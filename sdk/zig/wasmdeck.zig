//! wasmdeck.zig: the guest side of the wasmdeck Worker protocol, versions 1 and 2, for Zig
//! programs built for wasm32-wasi (docs/worker-protocol.md; API docs in sdk/zig/README.md).
//!
//! The engine writes an event frame (`fetch` or `tail`) to stdin; the Worker may write `log`
//! frames and make calls (`fetch`, `dispatch`), each answered by one frame on stdin, and ends
//! the event with one final frame (`response`, `done` or `exception`). This module defines the
//! marker functions `wasmdeck_worker_protocol_1` and `wasmdeck_worker_protocol_2`; the build
//! exports the one it means (`--export=...`), which is how the engine recognises the ABI and
//! its version. Version 2 (warm instances): the engine starts the module with `init`, `serve`
//! answers `ready` and serves event after event in one process until stdin ends.
//!
//!     const std = @import("std");
//!     const wd = @import("wasmdeck");
//!
//!     fn onFetch(ctx: *wd.Context, req: *const wd.Request, res: *wd.Response) !void {
//!         try ctx.log(.info, "serving {s}", .{req.path()});
//!         try res.setHeader("content-type", "text/plain");
//!         try res.print("hello from {s}\n", .{req.path()});
//!     }
//!
//!     pub fn main(init: std.process.Init) u8 {
//!         return wd.serve(init, .{ .fetch = onFetch });
//!     }
//!
//! Build: python -m ziglang build-exe -target wasm32-wasi -O ReleaseSmall
//!        --dep wasmdeck -Mroot=worker.zig -Mwasmdeck=path/to/wasmdeck.zig
//!
//! Memory: everything the SDK allocates comes from `ctx.gpa`, an arena freed when the event ends
//! (version 1: the process arena, `init.arena`), so nothing needs freeing; keep what must outlive
//! an event (version 2 global state) in memory of your own.
//! Never write to stdout yourself: it carries frames only. stderr lines become log entries.

const std = @import("std");
const builtin = @import("builtin");
const wasi = std.os.wasi;
const json = std.json;
const Allocator = std.mem.Allocator;

/// The newest protocol version this SDK speaks (it serves version 1 engines too).
pub const protocol_version = 2;
/// Largest meta of a frame (1 MiB) and largest body (10 MiB), in both directions.
pub const max_meta_bytes: usize = 1024 * 1024;
pub const max_body_bytes: usize = 10 * 1024 * 1024;
/// Log and exception messages are cut to this many bytes (the engine keeps 64 KiB and marks the
/// trace item truncated).
pub const max_log_bytes: usize = 128 * 1024;

/// The markers the engine looks for (docs/worker-protocol.md, sections 1 and 9.1); a build
/// exports one of them with `--export=wasmdeck_worker_protocol_1` (one process per event) or
/// `--export=wasmdeck_worker_protocol_2` (warm instances).
export fn wasmdeck_worker_protocol_1() void {}
export fn wasmdeck_worker_protocol_2() void {}

/// SDK failures. A host's `fetch_error` / `dispatch_error` is not one of these: it comes back as
/// `Result.failure`.
pub const Error = error{
    /// stdin ended (the host closed it) before a whole frame arrived.
    EndOfStream,
    /// stdin ended between frames (version 2: the engine is done with the instance).
    EndOfInput,
    ReadFailed,
    WriteFailed,
    /// A frame would be over the limits (sent or received).
    FrameTooLarge,
    /// The host sent something the protocol does not allow (bad meta, wrong answer, wrong id).
    ProtocolError,
    /// Not allowed now: a log or call after the final frame, a second response.
    InvalidState,
    /// A response status outside 100-599.
    InvalidStatus,
    OutOfMemory,
};

pub const Level = enum { debug, info, log, warn, @"error" };

// ------------------------------------------------------------------------------------ headers

pub const Header = struct { name: []const u8, value: []const u8 };

/// An ordered list of [name, value] pairs, names as sent; lookups are case-insensitive.
pub const Headers = struct {
    list: std.ArrayList(Header) = .empty,

    pub fn items(self: *const Headers) []const Header {
        return self.list.items;
    }
    /// The first value of header `name`, or null.
    pub fn get(self: *const Headers, name: []const u8) ?[]const u8 {
        return self.getNth(name, 0);
    }
    /// The n-th (from 0) value of header `name`, or null.
    pub fn getNth(self: *const Headers, name: []const u8, n: usize) ?[]const u8 {
        var left = n;
        for (self.list.items) |h| {
            if (std.ascii.eqlIgnoreCase(h.name, name)) {
                if (left == 0) return h.value;
                left -= 1;
            }
        }
        return null;
    }
    /// Append a header (the strings are copied).
    pub fn add(self: *Headers, gpa: Allocator, name: []const u8, value: []const u8) Allocator.Error!void {
        try self.list.append(gpa, .{ .name = try gpa.dupe(u8, name), .value = try gpa.dupe(u8, value) });
    }
    /// Remove every header called `name`, then add it once.
    pub fn set(self: *Headers, gpa: Allocator, name: []const u8, value: []const u8) Allocator.Error!void {
        _ = self.remove(name);
        try self.add(gpa, name, value);
    }
    /// Remove every header called `name`; returns how many were removed.
    pub fn remove(self: *Headers, name: []const u8) usize {
        var kept: usize = 0;
        for (self.list.items) |h| {
            if (!std.ascii.eqlIgnoreCase(h.name, name)) {
                self.list.items[kept] = h;
                kept += 1;
            }
        }
        const removed = self.list.items.len - kept;
        self.list.shrinkRetainingCapacity(kept);
        return removed;
    }
    /// Append every header of `other`.
    pub fn addAll(self: *Headers, gpa: Allocator, other: []const Header) Allocator.Error!void {
        for (other) |h| try self.add(gpa, h.name, h.value);
    }
};

// ------------------------------------------------------------------------------- requests

/// An HTTP request: the one a fetch event delivers, or one to send with `Context.fetch` or
/// `Context.dispatch`.
pub const Request = struct {
    method: []const u8 = "GET",
    url: []const u8,
    headers: []const Header = &.{},
    body: []const u8 = "",

    /// The first value of header `name` (case-insensitive), or null.
    pub fn header(self: *const Request, name: []const u8) ?[]const u8 {
        for (self.headers) |h| if (std.ascii.eqlIgnoreCase(h.name, name)) return h.value;
        return null;
    }
    /// The URL-decoded value of query parameter `name` ("" for `?name`), or null.
    pub fn query(self: *const Request, gpa: Allocator, name: []const u8) Allocator.Error!?[]u8 {
        return urlQuery(gpa, self.url, name, 0);
    }
    pub fn queryNth(self: *const Request, gpa: Allocator, name: []const u8, n: usize) Allocator.Error!?[]u8 {
        return urlQuery(gpa, self.url, name, n);
    }
    /// The URL's path without the query ("/" when empty).
    pub fn path(self: *const Request) []const u8 {
        return urlPath(self.url);
    }
    /// The URL's host name, lower case, without port (falls back to the Host header).
    pub fn host(self: *const Request, gpa: Allocator) Allocator.Error![]u8 {
        const h = urlHost(self.url);
        if (h.len == 0) {
            if (self.header("host")) |value| return lower(gpa, stripPort(value));
        }
        return lower(gpa, h);
    }
};

fn lower(gpa: Allocator, s: []const u8) Allocator.Error![]u8 {
    const out = try gpa.dupe(u8, s);
    for (out) |*c| c.* = std.ascii.toLower(c.*);
    return out;
}

fn stripPort(hostport: []const u8) []const u8 {
    if (hostport.len > 0 and hostport[0] == '[') {
        const close = std.mem.indexOfScalar(u8, hostport, ']') orelse return hostport;
        return hostport[0 .. close + 1];
    }
    const colon = std.mem.indexOfScalar(u8, hostport, ':') orelse return hostport;
    return hostport[0..colon];
}

fn authority(url: []const u8) ?struct { start: usize, end: usize } {
    const sep = std.mem.indexOf(u8, url, "://") orelse return null;
    const start = sep + 3;
    const end = std.mem.indexOfAnyPos(u8, url, start, "/?#") orelse url.len;
    return .{ .start = start, .end = end };
}

/// The host name of a URL as written (no userinfo, no port); "" when there is no authority.
pub fn urlHost(url: []const u8) []const u8 {
    const a = authority(url) orelse return "";
    var hostport = url[a.start..a.end];
    if (std.mem.lastIndexOfScalar(u8, hostport, '@')) |at| hostport = hostport[at + 1 ..];
    return stripPort(hostport);
}

/// The path of a URL, without query or fragment ("/" when empty).
pub fn urlPath(url: []const u8) []const u8 {
    const rest = if (authority(url)) |a| url[a.end..] else url;
    const end = std.mem.indexOfAny(u8, rest, "?#") orelse rest.len;
    return if (end == 0) "/" else rest[0..end];
}

/// The URL's port: the explicit one, else 443 for https and 80 for http, else 0.
pub fn urlPort(url: []const u8) u16 {
    const a = authority(url) orelse return 0;
    var hostport = url[a.start..a.end];
    if (std.mem.lastIndexOfScalar(u8, hostport, '@')) |at| hostport = hostport[at + 1 ..];
    const host = stripPort(hostport);
    if (hostport.len > host.len + 1 and hostport[host.len] == ':') {
        return std.fmt.parseInt(u16, hostport[host.len + 1 ..], 10) catch 0;
    }
    if (std.ascii.startsWithIgnoreCase(url, "https:")) return 443;
    if (std.ascii.startsWithIgnoreCase(url, "http:")) return 80;
    return 0;
}

/// Does the URL's host (and port) match `pattern`? A hostname (`api.example.com`), a wildcard
/// (`*.example.com`: any subdomain, not example.com itself; never an IP address) or `*`, each
/// optionally with `:PORT`; case-insensitive. The egress-policy rules of the protocol, for
/// Outbound Workers.
pub fn urlMatches(url: []const u8, pattern: []const u8) bool {
    const host = urlHost(url);
    if (host.len == 0) return false;
    const pat = std.mem.trim(u8, pattern, " \t");
    if (pat.len == 0) return false;
    const pat_host = stripPort(pat);
    if (pat_host.len < pat.len) {
        if (pat[pat_host.len] != ':') return false;
        const want = std.fmt.parseInt(u16, pat[pat_host.len + 1 ..], 10) catch return false;
        if (want != urlPort(url)) return false;
    }
    if (std.mem.eql(u8, pat_host, "*")) return true;
    if (pat_host.len > 2 and pat_host[0] == '*' and pat_host[1] == '.') {
        const is_ip = host[0] == '[' or std.mem.indexOfNone(u8, host, "0123456789.") == null;
        const suffix = pat_host[1..];
        return !is_ip and host.len > suffix.len and std.ascii.endsWithIgnoreCase(host, suffix);
    }
    return std.ascii.eqlIgnoreCase(host, pat_host);
}

/// Does the URL match any entry of a comma-separated list (an empty list matches nothing)?
pub fn urlMatchesList(url: []const u8, list: []const u8) bool {
    var it = std.mem.splitScalar(u8, list, ',');
    while (it.next()) |entry| if (urlMatches(url, entry)) return true;
    return false;
}

/// Decode form-urlencoding: '+' is a space, %XX a byte; malformed escapes are kept.
pub fn urlDecode(gpa: Allocator, s: []const u8) Allocator.Error![]u8 {
    var out = try gpa.alloc(u8, s.len);
    var i: usize = 0;
    var j: usize = 0;
    while (i < s.len) : (i += 1) {
        if (s[i] == '+') {
            out[j] = ' ';
        } else if (s[i] == '%' and i + 2 < s.len and std.ascii.isHex(s[i + 1]) and std.ascii.isHex(s[i + 2])) {
            out[j] = std.fmt.parseInt(u8, s[i + 1 .. i + 3], 16) catch unreachable;
            i += 2;
        } else {
            out[j] = s[i];
        }
        j += 1;
    }
    return out[0..j];
}

/// The decoded value of the n-th (from 0) query parameter called `name`, or null.
pub fn urlQuery(gpa: Allocator, url: []const u8, name: []const u8, n: usize) Allocator.Error!?[]u8 {
    const q = std.mem.indexOfScalar(u8, url, '?') orelse return null;
    const end = std.mem.indexOfScalarPos(u8, url, q, '#') orelse url.len;
    var left = n;
    var it = std.mem.splitScalar(u8, url[q + 1 .. end], '&');
    while (it.next()) |part| {
        if (part.len == 0) continue;
        const eq = std.mem.indexOfScalar(u8, part, '=');
        const key = try urlDecode(gpa, part[0 .. eq orelse part.len]);
        if (!std.mem.eql(u8, key, name)) continue;
        if (left > 0) {
            left -= 1;
            continue;
        }
        return if (eq) |e| try urlDecode(gpa, part[e + 1 ..]) else try gpa.dupe(u8, "");
    }
    return null;
}

// ------------------------------------------------------------------------------ responses

/// The response a fetch handler fills in: status 200, no headers, empty body to start with.
pub const Response = struct {
    gpa: Allocator,
    status: u16 = 200,
    headers: Headers = .{},
    body: std.ArrayList(u8) = .empty,

    pub fn addHeader(self: *Response, name: []const u8, value: []const u8) Allocator.Error!void {
        try self.headers.add(self.gpa, name, value);
    }
    pub fn setHeader(self: *Response, name: []const u8, value: []const u8) Allocator.Error!void {
        try self.headers.set(self.gpa, name, value);
    }
    pub fn write(self: *Response, bytes: []const u8) Allocator.Error!void {
        try self.body.appendSlice(self.gpa, bytes);
    }
    pub fn print(self: *Response, comptime fmt: []const u8, args: anytype) Allocator.Error!void {
        try self.body.print(self.gpa, fmt, args);
    }
    /// Set the status, content-type text/plain (unless one is set) and the body.
    pub fn text(self: *Response, status: u16, body: []const u8) Allocator.Error!void {
        self.status = status;
        if (self.headers.get("content-type") == null) try self.addHeader("content-type", "text/plain");
        self.body.clearRetainingCapacity();
        try self.write(body);
    }
};

// ---------------------------------------------------------------------------------- calls

/// The host's answer to a call.
pub const Result = union(enum) {
    /// An HTTP response (any status). For dispatch, `outcome` is the user Worker's outcome:
    /// ok, exception, exceededCpu, exceededMemory, exceededWallTime, scriptNotFound, loadShed,
    /// internalError.
    response: struct {
        status: u16,
        headers: []const Header,
        body: []const u8,
        outcome: ?[]const u8 = null,
    },
    /// fetch_error / dispatch_error: e.g. TooManySubrequests, EgressBlocked, NetworkError,
    /// OutboundError, InvalidRequest, ResponseTooLarge, NotAllowed.
    failure: struct { name: []const u8, message: []const u8 },
};

pub const Param = struct { name: []const u8, value: []const u8 };

/// Options of a dispatch call; null limits are left out (the tag limits apply).
pub const DispatchOptions = struct {
    cpu_ms: ?u64 = null,
    sub_requests: ?u64 = null,
    /// Values for the Outbound Worker's parameters.
    outbound: []const Param = &.{},
};

/// A batch of trace items for a tail handler.
pub const TailBatch = struct {
    /// The event's `count`.
    count: usize,
    /// The parsed items (empty, with `parse_error` set, if the body was not a JSON array).
    items: []const json.Value,
    /// The raw batch: a UTF-8 JSON array.
    body: []const u8,
    parse_error: ?anyerror = null,
};

pub const FetchHandler = *const fn (ctx: *Context, req: *const Request, res: *Response) anyerror!void;
pub const TailHandler = *const fn (ctx: *Context, batch: *const TailBatch) anyerror!void;

pub const Handlers = struct {
    fetch: ?FetchHandler = null,
    tail: ?TailHandler = null,
};

const State = enum { idle, fetch, tail, done };

/// What a handler can do: log, call fetch and dispatch, throw, read env and the event.
pub const Context = struct {
    /// The process arena: allocate freely, nothing needs freeing.
    gpa: Allocator,
    environ: *const std.process.Environ.Map,
    /// The whole event meta.
    event: json.Value,
    /// The event's "worker" and "namespace" ("" when absent).
    worker: []const u8,
    namespace: []const u8,
    /// Version 2: the instance's invocation number for this event (1, 2, 3...); 1 under version 1.
    invocation: i64 = 1,
    /// Serving a version 2 instance (the engine sent `init`).
    warm: bool = false,
    /// Version 2: the final frame says `"retire": true` and the instance ends after it.
    retiring: bool = false,
    state: State = .idle,
    next_id: i64 = 1,

    /// A value of the event's per-invocation `env` (version 2: an Outbound Worker's parameters),
    /// else an environment variable (a Worker var), or null.
    pub fn env(self: *const Context, name: []const u8) ?[]const u8 {
        if (jsonString(jsonGet(jsonGet(self.event, "env"), name))) |value| return value;
        return self.environ.get(name);
    }

    /// Version 2: end this instance after the current event (its final frame carries
    /// `"retire": true`; `serve` returns 0 after sending it). No effect under version 1.
    pub fn retire(self: *Context) void {
        if (self.warm) self.retiring = true;
    }

    /// Send a `log` frame. Messages are cut to 128 KiB.
    pub fn log(self: *Context, level: Level, comptime fmt: []const u8, args: anytype) Error!void {
        if (self.state != .fetch and self.state != .tail) return error.InvalidState;
        const message = try std.fmt.allocPrint(self.gpa, fmt, args);
        var m = try Meta.begin(self.gpa, "log");
        try m.field("level", @tagName(level));
        try m.field("message", cutUtf8(message, max_log_bytes));
        try writeFrame(try m.finish(), "");
    }

    /// Send an `exception` frame and exit(0). After a final frame it only writes
    /// "error: NAME: message" to stderr and exits with status 1. On a version 2 instance the
    /// frame carries `"retire": true` (the process exits); a handler that returns an error
    /// instead answers with an exception and the instance serves on.
    pub fn throw(self: *Context, name: []const u8, comptime fmt: []const u8, args: anytype) noreturn {
        const message = std.fmt.allocPrint(self.gpa, fmt, args) catch "(out of memory formatting the message)";
        self.throwMessage(name, message);
    }

    pub fn throwMessage(self: *Context, name: []const u8, message: []const u8) noreturn {
        if (self.state == .done) {
            stderrPrint("error: {s}: {s}\n", .{ name, message });
            std.process.exit(1);
        }
        self.state = .done;
        if (self.warm) self.retiring = true;
        sendException(self.gpa, name, message, self.retiring) catch |err| {
            stderrPrint("error: {s}: {s} (the exception frame could not be sent: {t})\n", .{ name, message, err });
            std.process.exit(1);
        };
        std.process.exit(0);
    }

    /// Answer the event with an `exception` frame and carry on (the serve loop goes on with the
    /// next event); after a final frame, only "error: NAME: message" on stderr and status 1.
    fn answerException(self: *Context, name: []const u8, message: []const u8) u8 {
        if (self.state == .done) {
            stderrPrint("error: {s}: {s}\n", .{ name, message });
            return 1;
        }
        self.state = .done;
        sendException(self.gpa, name, message, self.retiring) catch |err| {
            stderrPrint("error: {s}: {s} (the exception frame could not be sent: {t})\n", .{ name, message, err });
            return 1;
        };
        return 0;
    }

    fn answerExceptionFmt(self: *Context, name: []const u8, comptime fmt: []const u8, args: anytype) u8 {
        const message = std.fmt.allocPrint(self.gpa, fmt, args) catch "(out of memory formatting the message)";
        return self.answerException(name, message);
    }

    fn answerError(self: *Context, comptime fmt: []const u8, err: anyerror) u8 {
        return self.answerExceptionFmt(@errorName(err), fmt, .{@errorName(err)});
    }

    /// Send the final `response` frame now (the fetch handler's return sends it otherwise).
    pub fn respond(self: *Context, res: *const Response) Error!void {
        if (self.state != .fetch) return error.InvalidState;
        if (res.status < 100 or res.status > 599) return error.InvalidStatus;
        if (res.body.items.len > max_body_bytes) return error.FrameTooLarge;
        var m = try Meta.begin(self.gpa, "response");
        try m.s.objectField("status");
        try m.s.write(res.status);
        try m.s.objectField("headers");
        try m.headers(res.headers.items());
        try m.retire(self.retiring);
        try writeFrame(try m.finish(), res.body.items);
        self.state = .done;
    }

    /// Make a `fetch` call and wait for its answer. Any HTTP response (4xx and 5xx included)
    /// is `.response`; the host's fetch_error is `.failure`; SDK failures are errors
    /// (`error.FrameTooLarge` for a body over 10 MiB, nothing sent).
    pub fn fetch(self: *Context, req: Request) Error!Result {
        if (self.state != .fetch and self.state != .tail) return error.InvalidState;
        const id = self.next_id;
        self.next_id += 1;
        var m = try Meta.begin(self.gpa, "fetch");
        try m.s.objectField("id");
        try m.s.write(id);
        try m.s.objectField("request");
        try m.request(req);
        return self.call(id, try m.finish(), req.body, "fetch_result", "fetch_error");
    }

    /// Run user Worker `name` of the same namespace with the incoming request (or `req`).
    pub fn dispatch(self: *Context, name: []const u8, options: DispatchOptions, req: ?Request) Error!Result {
        if (self.state != .fetch and self.state != .tail) return error.InvalidState;
        const id = self.next_id;
        self.next_id += 1;
        var m = try Meta.begin(self.gpa, "dispatch");
        try m.s.objectField("id");
        try m.s.write(id);
        try m.field("name", name);
        const has_limits = options.cpu_ms != null or options.sub_requests != null;
        if (has_limits or options.outbound.len > 0) {
            try m.s.objectField("options");
            try m.s.beginObject();
            if (has_limits) {
                try m.s.objectField("limits");
                try m.s.beginObject();
                if (options.cpu_ms) |v| {
                    try m.s.objectField("cpuMs");
                    try m.s.write(v);
                }
                if (options.sub_requests) |v| {
                    try m.s.objectField("subRequests");
                    try m.s.write(v);
                }
                try m.s.endObject();
            }
            if (options.outbound.len > 0) {
                try m.s.objectField("outbound");
                try m.s.beginObject();
                for (options.outbound) |p| try m.field(p.name, p.value);
                try m.s.endObject();
            }
            try m.s.endObject();
        }
        if (req) |r| {
            try m.s.objectField("request");
            try m.request(r);
        }
        return self.call(id, try m.finish(), if (req) |r| r.body else "", "dispatch_result", "dispatch_error");
    }

    fn call(self: *Context, id: i64, meta: []const u8, body: []const u8, ok_type: []const u8, err_type: []const u8) Error!Result {
        try writeFrame(meta, body);
        const answer = try readFrame(self.gpa);
        const answer_id = jsonInt(jsonGet(answer.meta, "id")) orelse return error.ProtocolError;
        if (answer_id != id) return error.ProtocolError;
        if (std.mem.eql(u8, answer.type, ok_type)) {
            const status = jsonInt(jsonGet(answer.meta, "status")) orelse 0;
            return .{ .response = .{
                .status = std.math.cast(u16, status) orelse 0,
                .headers = try headersFromJson(self.gpa, jsonGet(answer.meta, "headers")),
                .body = answer.body,
                .outcome = jsonString(jsonGet(answer.meta, "outcome")),
            } };
        }
        if (std.mem.eql(u8, answer.type, err_type)) {
            return .{ .failure = .{
                .name = jsonString(jsonGet(answer.meta, "name")) orelse "Error",
                .message = jsonString(jsonGet(answer.meta, "message")) orelse "",
            } };
        }
        return error.ProtocolError;
    }
};

// ---------------------------------------------------------------------------------- serve

/// Read the event, run the matching handler, send the final frame; returns main's exit status
/// (0, or 1 when the event could not be read or the final frame not written). A handler that
/// returns an error answers with an `exception` named after the error; a missing handler with
/// `NoHandler`; a response over the limits with `ResponseTooLarge`.
///
/// Version 2: when the first frame is `init` (the module exports `wasmdeck_worker_protocol_2`),
/// answer `ready`, then serve event after event in this process until stdin ends (0) or a
/// handler called `ctx.retire()` (0 after that event's final frame). Each event gets a fresh
/// arena as `ctx.gpa`.
pub fn serve(init: std.process.Init, handlers: Handlers) u8 {
    const gpa = init.arena.allocator();
    const first = readFrame(gpa) catch |err| {
        stderrPrint("error: wasmdeck: could not read the event frame: {t}\n", .{err});
        return 1;
    };
    if (!std.mem.eql(u8, first.type, "init")) return handleEvent(gpa, init.environ_map, first, handlers, false, null);
    writeFrame("{\"type\":\"ready\"}", "") catch |err| {
        stderrPrint("error: wasmdeck: could not send ready: {t}\n", .{err});
        return 1;
    };
    var arena = std.heap.ArenaAllocator.init(init.gpa);
    while (true) {
        _ = arena.reset(.retain_capacity);
        const event_gpa = arena.allocator();
        const event = readFrame(event_gpa) catch |err| switch (err) {
            error.EndOfInput => return 0, // the engine is done with this instance
            else => {
                stderrPrint("error: wasmdeck: could not read the event frame: {t}\n", .{err});
                return 1;
            },
        };
        // an answer to a call still in flight when an earlier event ended (section 9.3)
        if (std.mem.endsWith(u8, event.type, "_result") or std.mem.endsWith(u8, event.type, "_error")) continue;
        var retiring = false;
        const status = handleEvent(event_gpa, init.environ_map, event, handlers, true, &retiring);
        if (status != 0 or retiring) return status;
    }
}

fn handleEvent(gpa: Allocator, environ: *const std.process.Environ.Map, event: Frame, handlers: Handlers, warm: bool, retiring_out: ?*bool) u8 {
    var ctx: Context = .{
        .gpa = gpa,
        .environ = environ,
        .event = event.meta,
        .worker = jsonString(jsonGet(event.meta, "worker")) orelse "",
        .namespace = jsonString(jsonGet(event.meta, "namespace")) orelse "",
        .invocation = jsonInt(jsonGet(event.meta, "invocation")) orelse 1,
        .warm = warm,
    };
    defer if (retiring_out) |out| {
        out.* = ctx.retiring;
    };
    if (std.mem.eql(u8, event.type, "fetch")) {
        ctx.state = .fetch;
        const r = jsonGet(event.meta, "request");
        const req: Request = .{
            .method = jsonString(jsonGet(r, "method")) orelse "GET",
            .url = jsonString(jsonGet(r, "url")) orelse "",
            .headers = headersFromJson(gpa, jsonGet(r, "headers")) catch ctx.throw("OutOfMemory", "reading the request headers", .{}),
            .body = event.body,
        };
        var res: Response = .{ .gpa = gpa };
        if (handlers.fetch) |handler| {
            handler(&ctx, &req, &res) catch |err| return ctx.answerError("the fetch handler failed: error.{s}", err);
        } else return ctx.answerException("NoHandler", "this Worker has no fetch handler");
        if (ctx.state == .fetch) {
            ctx.respond(&res) catch |err| switch (err) {
                error.FrameTooLarge => return if (res.body.items.len > max_body_bytes)
                    ctx.answerExceptionFmt("ResponseTooLarge", "response body of {d} bytes is over the {d}-byte frame limit", .{ res.body.items.len, max_body_bytes })
                else
                    ctx.answerExceptionFmt("ResponseTooLarge", "response headers are over the {d}-byte frame limit", .{max_meta_bytes}),
                error.InvalidStatus => return ctx.answerExceptionFmt("InvalidResponse", "response status {d} is not between 100 and 599", .{res.status}),
                else => {
                    stderrPrint("error: wasmdeck: could not send the response: {t}\n", .{err});
                    return 1;
                },
            };
        }
        return 0;
    }
    if (std.mem.eql(u8, event.type, "tail")) {
        ctx.state = .tail;
        var batch: TailBatch = .{ .count = 0, .items = &.{}, .body = event.body };
        if (json.parseFromSliceLeaky(json.Value, gpa, event.body, .{ .duplicate_field_behavior = .use_last })) |parsed| {
            switch (parsed) {
                .array => |a| batch.items = a.items,
                else => batch.parse_error = error.NotAnArray,
            }
        } else |err| batch.parse_error = err;
        batch.count = std.math.cast(usize, jsonInt(jsonGet(event.meta, "count")) orelse 0) orelse batch.items.len;
        if (handlers.tail) |handler| {
            handler(&ctx, &batch) catch |err| return ctx.answerError("the tail handler failed: error.{s}", err);
        } else return ctx.answerException("NoHandler", "this Worker has no tail handler");
        if (ctx.state == .tail) {
            var done = Meta.begin(gpa, "done") catch return 1;
            done.retire(ctx.retiring) catch return 1;
            const meta = done.finish() catch return 1;
            writeFrame(meta, "") catch |err| {
                stderrPrint("error: wasmdeck: could not send done: {t}\n", .{err});
                return 1;
            };
            ctx.state = .done;
        }
        return 0;
    }
    ctx.state = .fetch;
    return ctx.answerExceptionFmt("UnknownEvent", "this Worker does not handle \"{s}\" events", .{event.type});
}

// ----------------------------------------------------------------------------------- JSON

/// Member `key` of an object value, or null.
pub fn jsonGet(v: ?json.Value, key: []const u8) ?json.Value {
    const value = v orelse return null;
    return switch (value) {
        .object => |o| o.get(key),
        else => null,
    };
}

/// Element `i` of an array value, or null.
pub fn jsonAt(v: ?json.Value, i: usize) ?json.Value {
    const value = v orelse return null;
    return switch (value) {
        .array => |a| if (i < a.items.len) a.items[i] else null,
        else => null,
    };
}

/// Follow a dot-separated path of member names and array indices ("event.request.url",
/// "logs.0.message.0").
pub fn jsonPath(v: ?json.Value, path: []const u8) ?json.Value {
    var cur = v orelse return null;
    var it = std.mem.splitScalar(u8, path, '.');
    while (it.next()) |seg| {
        cur = switch (cur) {
            .array => jsonAt(cur, std.fmt.parseInt(usize, seg, 10) catch return null),
            else => jsonGet(cur, seg),
        } orelse return null;
    }
    return cur;
}

pub fn jsonString(v: ?json.Value) ?[]const u8 {
    const value = v orelse return null;
    return switch (value) {
        .string => |s| s,
        else => null,
    };
}

pub fn jsonInt(v: ?json.Value) ?i64 {
    const value = v orelse return null;
    return switch (value) {
        .integer => |i| i,
        .float => |f| if (f >= -9.2e18 and f <= 9.2e18) @as(i64, @intFromFloat(f)) else null,
        else => null,
    };
}

/// Serialise any value (a json.Value included) as compact JSON. Strings that are not valid
/// UTF-8 get U+FFFD for each bad byte.
pub fn stringify(gpa: Allocator, value: anytype) Allocator.Error![]u8 {
    return json.Stringify.valueAlloc(gpa, value, .{});
}

/// `s` if it is valid UTF-8, else a copy with U+FFFD for each byte that is not.
pub fn sanitizeUtf8(gpa: Allocator, s: []const u8) Allocator.Error![]const u8 {
    if (std.unicode.utf8ValidateSlice(s)) return s;
    var out: std.ArrayList(u8) = .empty;
    var i: usize = 0;
    while (i < s.len) {
        const n = std.unicode.utf8ByteSequenceLength(s[i]) catch 0;
        if (n > 0 and i + n <= s.len and std.unicode.utf8ValidateSlice(s[i .. i + n])) {
            try out.appendSlice(gpa, s[i .. i + n]);
            i += n;
        } else {
            try out.appendSlice(gpa, "\u{FFFD}");
            i += 1;
        }
    }
    return out.items;
}

fn cutUtf8(s: []const u8, max: usize) []const u8 {
    if (s.len <= max) return s;
    var n = max;
    while (n > 0 and (s[n] & 0xC0) == 0x80) n -= 1;
    return s[0..n];
}

fn headersFromJson(gpa: Allocator, v: ?json.Value) Allocator.Error![]const Header {
    const value = v orelse return &.{};
    const arr = switch (value) {
        .array => |a| a.items,
        else => return &.{},
    };
    var out: std.ArrayList(Header) = .empty;
    for (arr) |pair| {
        const name = jsonString(jsonAt(pair, 0)) orelse continue;
        const val = jsonString(jsonAt(pair, 1)) orelse continue;
        try out.append(gpa, .{ .name = name, .value = val });
    }
    return out.items;
}

/// Builds a frame meta object: {"type": TYPE, ...}.
const Meta = struct {
    gpa: Allocator,
    aw: *std.Io.Writer.Allocating,
    s: json.Stringify,

    fn begin(gpa: Allocator, kind: []const u8) Error!Meta {
        const aw = try gpa.create(std.Io.Writer.Allocating);
        aw.* = .init(gpa);
        var m: Meta = .{ .gpa = gpa, .aw = aw, .s = .{ .writer = &aw.writer } };
        try m.s.beginObject();
        try m.field("type", kind);
        return m;
    }
    fn field(self: *Meta, key: []const u8, value: []const u8) Error!void {
        try self.s.objectField(try sanitizeUtf8(self.gpa, key));
        try self.s.write(try sanitizeUtf8(self.gpa, value));
    }
    fn headers(self: *Meta, list: []const Header) Error!void {
        try self.s.beginArray();
        for (list) |h| {
            try self.s.beginArray();
            try self.s.write(try sanitizeUtf8(self.gpa, h.name));
            try self.s.write(try sanitizeUtf8(self.gpa, h.value));
            try self.s.endArray();
        }
        try self.s.endArray();
    }
    fn request(self: *Meta, req: Request) Error!void {
        try self.s.beginObject();
        try self.field("method", if (req.method.len == 0) "GET" else req.method);
        try self.field("url", req.url);
        try self.s.objectField("headers");
        try self.headers(req.headers);
        try self.s.endObject();
    }
    fn retire(self: *Meta, retiring: bool) Error!void {
        if (!retiring) return;
        try self.s.objectField("retire");
        try self.s.write(true);
    }
    fn finish(self: *Meta) Error![]const u8 {
        try self.s.endObject();
        return self.aw.written();
    }
};

fn sendException(gpa: Allocator, name: []const u8, message: []const u8, retiring: bool) Error!void {
    var m = try Meta.begin(gpa, "exception");
    try m.field("name", cutUtf8(name, 1024));
    try m.field("message", cutUtf8(message, max_log_bytes));
    try m.retire(retiring);
    try writeFrame(try m.finish(), "");
}

// --------------------------------------------------------------------------------- frames

/// One frame as read from stdin.
pub const Frame = struct {
    meta: json.Value,
    type: []const u8,
    body: []u8,
};

/// Whether the last readAll got any byte before it failed (so EOF was not between frames).
var started_reading = false;

fn readAll(buf: []u8) Error!void {
    var got: usize = 0;
    started_reading = false;
    while (got < buf.len) {
        var iov = [_]wasi.iovec_t{.{ .base = buf.ptr + got, .len = buf.len - got }};
        var n: usize = 0;
        switch (wasi.fd_read(0, &iov, 1, &n)) {
            .SUCCESS => {},
            .INTR, .AGAIN => continue,
            else => return error.ReadFailed,
        }
        if (n == 0) return error.EndOfStream;
        got += n;
        started_reading = true;
    }
}

fn writeAll(fd: wasi.fd_t, parts: []const []const u8) Error!void {
    for (parts) |part| {
        var done: usize = 0;
        while (done < part.len) {
            const iov = [_]wasi.ciovec_t{.{ .base = part.ptr + done, .len = part.len - done }};
            var n: usize = 0;
            switch (wasi.fd_write(fd, &iov, 1, &n)) {
                .SUCCESS => {},
                .INTR, .AGAIN => continue,
                else => return error.WriteFailed,
            }
            if (n == 0) return error.WriteFailed;
            done += n;
        }
    }
}

/// Read one frame from stdin (short reads handled). error.FrameTooLarge over the limits,
/// error.ProtocolError when meta is not a JSON object with a string `type`.
pub fn readFrame(gpa: Allocator) Error!Frame {
    var head: [8]u8 = undefined;
    readAll(&head) catch |err| return if (err == error.EndOfStream and !started_reading) error.EndOfInput else err;
    const meta_len = std.mem.readInt(u32, head[0..4], .little);
    const body_len = std.mem.readInt(u32, head[4..8], .little);
    if (meta_len > max_meta_bytes or body_len > max_body_bytes) return error.FrameTooLarge;
    const raw = try gpa.alloc(u8, meta_len);
    try readAll(raw);
    const body = try gpa.alloc(u8, body_len);
    try readAll(body);
    const meta = json.parseFromSliceLeaky(json.Value, gpa, raw, .{ .duplicate_field_behavior = .use_last }) catch |err| switch (err) {
        error.OutOfMemory => return error.OutOfMemory,
        else => return error.ProtocolError,
    };
    const kind = jsonString(jsonGet(meta, "type")) orelse return error.ProtocolError;
    return .{ .meta = meta, .type = kind, .body = body };
}

/// Write one frame to stdout (short writes handled); error.FrameTooLarge, with nothing
/// written, when meta is over 1 MiB or body over 10 MiB. No protocol-state checks.
pub fn writeFrame(meta: []const u8, body: []const u8) Error!void {
    if (meta.len > max_meta_bytes or body.len > max_body_bytes) return error.FrameTooLarge;
    var head: [8]u8 = undefined;
    std.mem.writeInt(u32, head[0..4], @intCast(meta.len), .little);
    std.mem.writeInt(u32, head[4..8], @intCast(body.len), .little);
    try writeAll(1, &.{ &head, meta, body });
}

/// Write a formatted line to stderr (a log line for the engine); errors are ignored.
pub fn stderrPrint(comptime fmt: []const u8, args: anytype) void {
    var buf: [4096]u8 = undefined;
    const text = std.fmt.bufPrint(&buf, fmt, args) catch buf[0..];
    writeAll(2, &.{text}) catch {};
}
