// Preloaded (node --import) into the third-party Node.js MCP servers the tests run: they
// listen on every interface by default, and every server a test starts listens on
// 127.0.0.1 only. A listen(port, [host,] ...) gets host 127.0.0.1 whatever it asked for.
import net from "node:net";

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "number" || typeof args[0] === "string") {
    const rest = typeof args[1] === "string" ? args.slice(2) : args.slice(1);
    return listen.call(this, Number(args[0]), "127.0.0.1", ...rest);
  }
  if (args[0] !== null && typeof args[0] === "object" && "port" in args[0]) {
    return listen.call(this, { ...args[0], host: "127.0.0.1" }, ...args.slice(1));
  }
  return listen.apply(this, args);
};
