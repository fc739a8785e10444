/** The MAC address of a device in a namespace (ip -j link show). */
import { runJson } from "./exec.js";

export async function getLinkMAC(netns: string, dev: string): Promise<string> {
  const [l] = await runJson<Array<{ address: string }>>("ip", ["-j", "link", "show", "dev", dev], { netns });
  return l!.address;
}
