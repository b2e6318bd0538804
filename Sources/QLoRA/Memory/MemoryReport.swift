import Foundation
import SafeTensors

/// Text, JSON and SVG renderings of memory plans (and of a plan against a measurement), for
/// `qlora memory`. Pure functions of their inputs: the CLI prints or writes what they return.
public enum MemoryReport {
    // MARK: - Units

    /// Binary units with two decimals: "512 B", "1.50 KiB", "3.25 GiB".
    public static func humanBytes(_ bytes: Int) -> String {
        let sign = bytes < 0 ? "-" : ""
        let magnitude = Double(bytes.magnitude)
        let units = ["KiB", "MiB", "GiB", "TiB"]
        guard magnitude >= 1024 else { return "\(sign)\(bytes.magnitude) B" }
        var value = magnitude / 1024
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return sign + String(format: "%.2f", value) + " " + units[unit]
    }

    /// 1234567 -> "1,234,567" (negative numbers too).
    public static func withCommas(_ n: Int) -> String {
        (n < 0 ? "-" : "") + LoRAAdapters.formatWithCommas(Int(n.magnitude))
    }

    static func percent(_ part: Int, of total: Int) -> String {
        total == 0 ? "0.0 %" : String(format: "%.1f %%", 100 * Double(part) / Double(total))
    }

    static func pad(_ text: String, _ width: Int, right: Bool = false) -> String {
        let gap = max(0, width - text.count)
        let spaces = String(repeating: " ", count: gap)
        return right ? spaces + text : text + spaces
    }

    // MARK: - One plan

    /// One line describing the options: method, base, compute, LoRA, batch, sequence, checkpointing, optimizer.
    public static func describe(_ plan: MemoryPlan) -> String {
        let o = plan.options
        var parts: [String] = []
        switch o.baseFormat {
        case .quantized(let q) where o.method == .lora:
            parts.append("QLoRA: \(q.quantType.rawValue) base, blocksize \(q.blocksize), \(q.doubleQuant ? "double quant" : "no double quant")")
        case .denseBF16 where o.method == .lora: parts.append("LoRA on a bf16 base")
        case .dense32 where o.method == .lora: parts.append("LoRA on an fp32 base")
        default: parts.append(plan.label)
        }
        parts.append("compute \(o.computePrecision.rawValue)")
        if let lora = o.lora {
            let adapted = lora.targets(in: plan.config)
            let targets = adapted == plan.config.layerLinears ? "all-linear" : adapted.joined(separator: ",")
            parts.append("r=\(lora.r) alpha=\(PythonFloat.repr(lora.loraAlpha)) \(targets)")
        }
        if let adapters = o.generationAdapters {
            parts.append("generation: \(adapters) adapter\(adapters == 1 ? "" : "s") loaded, \(o.batch) sequence\(o.batch == 1 ? "" : "s") × \(o.seqLen) positions (KV cache = saved activations)")
            return parts.joined(separator: ", ")
        }
        parts.append("batch \(o.batch) × seq \(o.seqLen)")
        parts.append("checkpointing \(o.gradientCheckpointing ? "on" : "off")")
        if o.gradientAccumulation > 1 { parts.append("\(o.gradientAccumulation) micro-batches per step") }
        parts.append(!o.training ? "inference" : o.optimizer == .adamw ? "AdamW" : "SGD")
        return parts.joined(separator: ", ")
    }

    /// The table of `qlora memory`: per category human size, exact bytes and share; the total; parameters.
    public static func table(_ plan: MemoryPlan) -> String {
        let total = plan.totalBytes
        var lines = [pad("category", 22) + pad("size", 12, right: true) + pad("bytes", 18, right: true) + pad("share", 9, right: true)]
        // The dataset row only when the plan knows the data (a run's live figures do).
        for category in MemoryCategory.allCases where category != .dataset || plan.breakdown[category] > 0 {
            let bytes = plan.breakdown[category]
            lines.append(pad(category.rawValue, 22) + pad(humanBytes(bytes), 12, right: true)
                         + pad(withCommas(bytes), 18, right: true) + pad(percent(bytes, of: total), 9, right: true))
        }
        lines.append(String(repeating: "─", count: 61))
        lines.append(pad("total", 22) + pad(humanBytes(total), 12, right: true) + pad(withCommas(total), 18, right: true)
                     + pad("100.0 %", 9, right: true))
        lines.append("")
        lines.append(contentsOf: parameterLines(plan))
        return lines.joined(separator: "\n")
    }

    static func parameterLines(_ plan: MemoryPlan) -> [String] {
        let share = percent(plan.trainableParameterCount, of: plan.allParameterCount).replacingOccurrences(of: " %", with: "%")
        var lines = ["parameters: trainable \(withCommas(plan.trainableParameterCount)) (\(share)) of \(withCommas(plan.allParameterCount)) in all"]
        if plan.quantizedParameterCount > 0 {
            let kind = plan.options.baseFormat == .stored ? "quantized (GGUF) weights" : "4-bit weights"
            lines.append("\(kind): \(withCommas(plan.quantizedParameterCount)) parameters, "
                         + String(format: "%.3f bits/param stored, %.3f bits/param resident",
                                  plan.quantizedStorageBitsPerParameter, plan.quantizedResidentBitsPerParameter))
        }
        return lines
    }

    // MARK: - Several plans

    /// Categories as rows, plans as columns, the total last.
    public static func compareTable(_ plans: [MemoryPlan]) -> String {
        let widths = plans.map { max(14, $0.label.count + 2) }
        func row(_ name: String, _ cell: (MemoryPlan) -> String) -> String {
            pad(name, 22) + zip(plans, widths).map { pad(cell($0), $1, right: true) }.joined()
        }
        var lines = [row("category") { $0.label }]
        for category in MemoryCategory.allCases where category != .dataset || plans.contains(where: { $0.breakdown[category] > 0 }) {
            lines.append(row(category.rawValue) { humanBytes($0.breakdown[category]) })
        }
        lines.append(String(repeating: "─", count: 22 + widths.reduce(0, +)))
        lines.append(row("total") { humanBytes($0.totalBytes) })
        lines.append(row("trainable params") { withCommas($0.trainableParameterCount) })
        return lines.joined(separator: "\n")
    }

    /// A horizontal stacked bar per plan, scaled to the largest total (`width` characters), one glyph
    /// per category, then a legend. `ascii` uses one letter per category instead of block shades.
    public static func stackedBars(_ plans: [MemoryPlan], width: Int = 60, ascii: Bool = false) -> String {
        let labelWidth = (plans.map(\.label.count).max() ?? 0) + 2
        let largest = max(1, plans.map(\.totalBytes).max() ?? 1)
        var lines: [String] = []
        for plan in plans {
            var bar = ""
            var cumulative = 0
            for category in MemoryCategory.allCases {
                let start = cellIndex(cumulative, largest, width)
                cumulative += plan.breakdown[category]
                let end = cellIndex(cumulative, largest, width)
                bar += String(repeating: category.glyph(ascii: ascii), count: end - start)
            }
            lines.append(pad(plan.label, labelWidth) + "│" + pad(bar, width) + "│ " + humanBytes(plan.totalBytes))
        }
        lines.append("")
        lines.append(legend(ascii: ascii))
        return lines.joined(separator: "\n")
    }

    /// Cell boundary of a running byte total: rounding cumulative sums keeps each bar's length exact.
    static func cellIndex(_ bytes: Int, _ largest: Int, _ width: Int) -> Int {
        Int((Double(bytes) / Double(largest) * Double(width)).rounded())
    }

    public static func legend(ascii: Bool = false) -> String {
        MemoryCategory.allCases.map { "\($0.glyph(ascii: ascii)) \($0.rawValue)" }.joined(separator: "  ")
    }

    // MARK: - JSON

    /// The same numbers as the tables, machine-readable: options, bytes per category (exact integers,
    /// keys are the category names), total, parameter counts.
    /// `qlora memory --ranks N`: what every rank of a data-parallel run holds and what a step sends.
    public static func dataParallel(_ plan: MemoryPlan, ranks: Int) -> String {
        let traffic = DataParallelTraffic(gradientSectionBytes: plan.gradientSectionBytes, ranks: ranks)
        let o = plan.options
        return """
        Data-parallel over \(ranks) ranks (mpirun -np \(ranks) qlora train ..., docs/distributed.md):
          memory per rank        \(humanBytes(plan.totalBytes)) (every rank holds all of the above; \(ranks) ranks \(humanBytes(ranks * plan.totalBytes)))
          summed per step        \(humanBytes(traffic.allreducedBytes)) (\(withCommas(traffic.allreducedBytes)) bytes: the fp32 gradients and 3 counts, \(DataParallelTraffic.callsPerStep) allreduce calls)
          sent per rank per step \(humanBytes(traffic.ringBytesSentPerRank)) with a ring allreduce (2 (N-1)/N of it; as much received)
          a step                 \(ranks * o.gradientAccumulation) micro-batches of \(o.batch) × \(o.seqLen) tokens, \(o.gradientAccumulation) per rank
        """
    }

    public static func json(_ plans: [MemoryPlan], model: String, ranks: Int = 1) -> String {
        let entries: [JSONValue] = plans.map { plan in
            let o = plan.options
            var base: [(key: String, value: JSONValue)] = []
            switch o.baseFormat {
            case .dense32: base = [("format", .string("fp32"))]
            case .denseBF16: base = [("format", .string("bf16"))]
            case .quantized(let q):
                base = [("format", .string(q.quantType.rawValue)), ("blocksize", .int(q.blocksize)), ("double_quant", .bool(q.doubleQuant))]
            case .stored: base = [("format", .string(o.storedWeights == nil ? "stored" : "gguf"))]
            }
            var options: [(key: String, value: JSONValue)] = [
                ("base", .object(base)), ("compute_dtype", .string(o.computePrecision.rawValue)),
                ("batch", .int(o.batch)), ("seq_len", .int(o.seqLen)), ("gradient_checkpointing", .bool(o.gradientCheckpointing)),
                ("optimizer", .string(o.optimizer.rawValue)), ("training", .bool(o.training)),
                ("tile_rows", .int(o.tileRows)), ("logits_chunk_rows", .int(o.logitsChunkRows)),
                ("gradient_accumulation", .int(o.gradientAccumulation)),
            ]
            if let adapters = o.generationAdapters { options.append(("generation_adapters", .int(adapters))) }
            if let lora = o.lora {
                options.append(("lora", .object([("r", .int(lora.r)), ("lora_alpha", .number(lora.loraAlpha)),
                                                 ("target_modules", .array(lora.targets(in: plan.config).map { .string($0) }))])))
            }
            var parameters: [(key: String, value: JSONValue)] = [
                ("trainable", .int(plan.trainableParameterCount)), ("all", .int(plan.allParameterCount)),
                ("base", .int(plan.baseParameterCount)), ("quantized", .int(plan.quantizedParameterCount)),
            ]
            if plan.quantizedParameterCount > 0 {
                parameters.append(("quantized_bits_per_param_stored", .number(plan.quantizedStorageBitsPerParameter)))
                parameters.append(("quantized_bits_per_param_resident", .number(plan.quantizedResidentBitsPerParameter)))
            }
            var entry: [(key: String, value: JSONValue)] = [
                ("label", .string(plan.label)), ("method", .string(o.method.rawValue)), ("options", .object(options)),
                ("bytes", .object(MemoryCategory.allCases.map { ($0.rawValue, .int(plan.breakdown[$0])) })),
                ("total_bytes", .int(plan.totalBytes)), ("parameters", .object(parameters)),
            ]
            if ranks > 1 {
                let traffic = DataParallelTraffic(gradientSectionBytes: plan.gradientSectionBytes, ranks: ranks)
                entry.append(("data_parallel", .object([
                    ("ranks", .int(ranks)), ("bytes_per_rank", .int(plan.totalBytes)),
                    ("allreduced_bytes_per_step", .int(traffic.allreducedBytes)),
                    ("ring_bytes_sent_per_rank_per_step", .int(traffic.ringBytesSentPerRank)),
                    ("allreduce_calls_per_step", .int(DataParallelTraffic.callsPerStep)),
                ])))
            }
            return .object(entry)
        }
        return PythonJSON(.object([("model", .string(model)), ("plans", .array(entries))])).render(indent: 2, sortKeys: false) + "\n"
    }

    // MARK: - SVG

    /// A stacked horizontal bar chart of the plans (one bar per plan, one colour per category, legend),
    /// as a standalone SVG document.
    public static func svg(_ plans: [MemoryPlan], title: String) -> String {
        let labelWidth = 230.0, barArea = 520.0, barHeight = 26.0, gap = 14.0, top = 56.0
        let width = labelWidth + barArea + 110
        let largest = Double(max(1, plans.map(\.totalBytes).max() ?? 1))
        let legendTop = top + Double(plans.count) * (barHeight + gap) + 10
        let legendRows = (MemoryCategory.allCases.count + 3) / 4
        let height = legendTop + Double(legendRows) * 22 + 16
        func f(_ x: Double) -> String { String(format: "%.1f", x) }
        var svg = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(f(width))" height="\(f(height))" viewBox="0 0 \(f(width)) \(f(height))" font-family="sans-serif" font-size="13">
        <rect width="100%" height="100%" fill="#ffffff"/>
        <text x="12" y="26" font-size="16" font-weight="bold">\(xmlEscape(title))</text>

        """
        for (row, plan) in plans.enumerated() {
            let y = top + Double(row) * (barHeight + gap)
            svg += "<text x=\"12\" y=\"\(f(y + barHeight * 0.68))\">\(xmlEscape(plan.label))</text>\n"
            var x = labelWidth
            for category in MemoryCategory.allCases {
                let bytes = plan.breakdown[category]
                guard bytes > 0 else { continue }
                let w = Double(bytes) / largest * barArea
                svg += "<rect x=\"\(f(x))\" y=\"\(f(y))\" width=\"\(String(format: "%.3f", w))\" height=\"\(f(barHeight))\" fill=\"\(category.color)\">"
                svg += "<title>\(xmlEscape("\(category.rawValue): \(humanBytes(bytes)) (\(withCommas(bytes)) bytes)"))</title></rect>\n"
                x += w
            }
            svg += "<text x=\"\(f(x + 8))\" y=\"\(f(y + barHeight * 0.68))\">\(xmlEscape(humanBytes(plan.totalBytes)))</text>\n"
        }
        for (i, category) in MemoryCategory.allCases.enumerated() {
            let x = 12 + Double(i % 4) * 210, y = legendTop + Double(i / 4) * 22
            svg += "<rect x=\"\(f(x))\" y=\"\(f(y))\" width=\"14\" height=\"14\" fill=\"\(category.color)\"/>"
            svg += "<text x=\"\(f(x + 20))\" y=\"\(f(y + 12))\">\(xmlEscape(category.rawValue))</text>\n"
        }
        svg += "</svg>\n"
        return svg
    }

    static func xmlEscape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    // MARK: - Plan against measurement

    /// Planned vs measured bytes per category, the difference, and the peak RSS against the plan's total:
    /// what `qlora memory --measure` prints. `measured` comes from `LiveMemory.breakdown(executor:)` (its
    /// runtime overhead is left 0); the rest of the peak RSS is what the buffers do not explain.
    public static func planVersusMeasured(planned: MemoryBreakdown, measured: MemoryBreakdown, peakResidentBytes: Int) -> String {
        var lines = [pad("category", 22) + pad("planned", 12, right: true) + pad("measured", 12, right: true)
                     + pad("difference", 13, right: true) + pad("exact difference", 18, right: true)]
        for category in MemoryCategory.allCases where category != .runtimeOverhead {
            let p = planned[category], m = measured[category]
            lines.append(pad(category.rawValue, 22) + pad(humanBytes(p), 12, right: true) + pad(humanBytes(m), 12, right: true)
                         + pad(signed(m - p), 13, right: true) + pad(signedExact(m - p), 18, right: true))
        }
        let plannedBuffers = planned.total - planned[.runtimeOverhead]
        let measuredBuffers = measured.total - measured[.runtimeOverhead]
        lines.append(String(repeating: "─", count: 77))
        lines.append(pad("buffers", 22) + pad(humanBytes(plannedBuffers), 12, right: true) + pad(humanBytes(measuredBuffers), 12, right: true)
                     + pad(signed(measuredBuffers - plannedBuffers), 13, right: true)
                     + pad(signedExact(measuredBuffers - plannedBuffers), 18, right: true))
        lines.append("")
        let rest = peakResidentBytes - measuredBuffers
        lines.append("peak RSS \(humanBytes(peakResidentBytes)) (\(withCommas(peakResidentBytes)) bytes) vs planned total \(humanBytes(planned.total)): "
                     + "\(signed(peakResidentBytes - planned.total)) (\(percentDifference(peakResidentBytes, planned.total)))")
        lines.append("peak RSS not in measured buffers: \(humanBytes(rest)) (planned runtime overhead \(humanBytes(planned[.runtimeOverhead])))")
        return lines.joined(separator: "\n")
    }

    static func signed(_ bytes: Int) -> String { bytes == 0 ? "0" : (bytes > 0 ? "+" : "") + humanBytes(bytes) }
    static func signedExact(_ bytes: Int) -> String { bytes == 0 ? "0" : (bytes > 0 ? "+" : "") + withCommas(bytes) }
    static func percentDifference(_ value: Int, _ reference: Int) -> String {
        reference == 0 ? "n/a" : String(format: "%+.1f %%", 100 * Double(value - reference) / Double(reference))
    }
}

extension MemoryCategory {
    /// The bar-chart glyph: a block shade or pattern, or a letter with `ascii`.
    public func glyph(ascii: Bool = false) -> String {
        let index = MemoryCategory.allCases.firstIndex(of: self)!
        return ascii ? ["Q", "F", "T", "G", "O", "A", "W", "D", "R"][index] : ["█", "▓", "▒", "░", "▞", "▚", "▄", "▖", "▔"][index]
    }

    /// The SVG fill colour.
    public var color: String {
        let index = MemoryCategory.allCases.firstIndex(of: self)!
        return ["#1f4e79", "#6a9fd4", "#e07b00", "#f3b35c", "#b8322a", "#3a8f3a", "#8fcf8f", "#7b4fa0", "#9a9a9a"][index]
    }
}
