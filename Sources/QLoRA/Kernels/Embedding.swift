// N = rows (B*T), C = hidden size (dim), V = vocab.

/// Token embedding lookup.
public enum Embedding {
    /// out (N, C) = table[ids[n]]. table (V, C), ids (N), each in 0..<V (validated by the caller).
    public static func forward(out: UnsafeMutablePointer<Float>, table: UnsafePointer<Float>, ids: UnsafePointer<Int32>, rows: Int, dim: Int) {
        for n in 0..<rows {
            (out + n * dim).update(from: table + Int(ids[n]) * dim, count: dim)
        }
    }

    /// dtable (V, C) += scatter: dtable[ids[n]] += dout[n]. dout (N, C). Serial: repeated ids collide.
    public static func backward(dtable: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, ids: UnsafePointer<Int32>, rows: Int, dim: Int) {
        for n in 0..<rows {
            let destination = dtable + Int(ids[n]) * dim, source = dout + n * dim
            for c in 0..<dim { destination[c] += source[c] }
        }
    }

    /// Naive twin: element by element.
    public enum Reference {
        public static func forward(out: UnsafeMutablePointer<Float>, table: UnsafePointer<Float>, ids: UnsafePointer<Int32>, rows: Int, dim: Int) {
            for n in 0..<rows { for c in 0..<dim { out[n * dim + c] = table[Int(ids[n]) * dim + c] } }
        }

        public static func backward(dtable: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, ids: UnsafePointer<Int32>, rows: Int, dim: Int) {
            for n in 0..<rows { for c in 0..<dim { dtable[Int(ids[n]) * dim + c] += dout[n * dim + c] } }
        }
    }
}
