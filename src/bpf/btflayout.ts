/**
 * A map's key/value layout as a string, from BTF, so two builds whose structs
 * have the same size but other fields (order, offsets, types) are told apart.
 *
 * How it works: the type is walked from its id; typedefs and qualifiers are
 * looked through; a struct or union is rendered as its size and every
 * member's name, bit offset and layout; an int as size and encoding; an
 * array as its element's layout and count; an enum as its size.
 */
import koffi from "koffi";
import { libbpf, type Ptr } from "./libbpf.js";

const KIND = { INT: 1, PTR: 2, ARRAY: 3, STRUCT: 4, UNION: 5, ENUM: 6, TYPEDEF: 8, VOLATILE: 9, CONST: 10, RESTRICT: 11, ENUM64: 19 };

function words(btf: Ptr, id: number, n: number): number[] {
  const t = libbpf().btf_type_by_id(btf, id);
  if (!t) throw new Error(`no BTF type ${id}`);
  return koffi.decode(t, koffi.array("uint32_t", n)) as number[];
}

/** The layout of type `id` of `btf` (0 = none: "-"). */
export function btfLayout(btf: Ptr, id: number, depth = 0): string {
  if (id === 0) return "-";
  if (depth > 16) return "…";
  const [nameOff, info, sizeOrType] = words(btf, id, 3) as [number, number, number];
  const kind = (info >>> 24) & 0x1f;
  const vlen = info & 0xffff;
  switch (kind) {
    case KIND.TYPEDEF: case KIND.VOLATILE: case KIND.CONST: case KIND.RESTRICT:
      return btfLayout(btf, sizeOrType, depth + 1);
    case KIND.INT: return `int${sizeOrType}/${(words(btf, id, 4)[3]! >>> 24) & 0xf}`;
    case KIND.PTR: return "ptr";
    case KIND.ENUM: case KIND.ENUM64: return `enum${sizeOrType}`;
    case KIND.ARRAY: {
      const [, , , elem, , nelems] = words(btf, id, 6) as number[];
      return `${btfLayout(btf, elem!, depth + 1)}[${nelems}]`;
    }
    case KIND.STRUCT: case KIND.UNION: {
      const w = words(btf, id, 3 + 3 * vlen);
      const members: string[] = [];
      for (let i = 0; i < vlen; i++) {
        const [mName, mType, mOff] = w.slice(3 + 3 * i, 6 + 3 * i) as [number, number, number];
        members.push(`${libbpf().btf_name_by_offset(btf, mName) ?? ""}@${mOff}:${btfLayout(btf, mType, depth + 1)}`);
      }
      void nameOff;
      return `${kind === KIND.STRUCT ? "struct" : "union"}${sizeOrType}{${members.join(",")}}`;
    }
    default: return `kind${kind}/${sizeOrType}`;
  }
}
