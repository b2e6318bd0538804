import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import SafeTensors
import Testing
@testable import QLoRA

/// The renderings of `qlora memory`: units, tables, the stacked-bar chart, JSON, SVG, plan vs measured.
@Suite struct MemoryReportTests {
    static func plans() throws -> [MemoryPlan] {
        let config = try LlamaConfig.load(directory: FixturePaths.url("configs/smollm2-135m.json"))
        return try MemoryPlan.compareSet(config: config, options: .init(batch: 2, seqLen: 256, gradientCheckpointing: true))
    }

    @Test(arguments: [(0, "0 B"), (1023, "1023 B"), (1024, "1.00 KiB"), (1536, "1.50 KiB"), (5 << 20, "5.00 MiB"),
                      (3 << 30 + 1 << 29, "3.50 GiB"), (-2048, "-2.00 KiB"), (1 << 40, "1.00 TiB")])
    func humanBytes(_ bytes: Int, _ text: String) {
        #expect(MemoryReport.humanBytes(bytes) == text)
    }

    @Test func commas() {
        #expect(MemoryReport.withCommas(0) == "0")
        #expect(MemoryReport.withCommas(999) == "999")
        #expect(MemoryReport.withCommas(1000) == "1,000")
        #expect(MemoryReport.withCommas(-1_234_567) == "-1,234,567")
    }

    @Test func tableShowsEveryCategoryExactly() throws {
        let plan = try Self.plans()[3]
        let text = MemoryReport.table(plan)
        let lines = text.split(separator: "\n").map(String.init)
        for category in MemoryCategory.allCases {
            let bytes = plan.breakdown[category]
            // The dataset row only when the plan knows the data (MemoryReport.table); this plan does not.
            if category == .dataset && bytes == 0 {
                #expect(!lines.contains { $0.hasPrefix(category.rawValue) })
                continue
            }
            let line = try #require(lines.first { $0.hasPrefix(category.rawValue) }, "no line for \(category.rawValue)")
            #expect(line.contains(MemoryReport.withCommas(bytes)) && line.contains(MemoryReport.humanBytes(bytes)), "\(line)")
        }
        let total = try #require(lines.first { $0.hasPrefix("total") })
        #expect(total.contains(MemoryReport.withCommas(plan.totalBytes)))
        #expect(text.contains("trainable \(MemoryReport.withCommas(plan.trainableParameterCount))"))
        #expect(text.contains(String(format: "%.3f bits/param stored", plan.quantizedStorageBitsPerParameter)))
    }

    @Test func compareTableHasAColumnPerPlan() throws {
        let plans = try Self.plans()
        let text = MemoryReport.compareTable(plans)
        let header = try #require(text.split(separator: "\n").first)
        for plan in plans { #expect(header.contains(plan.label)) }
        let total = try #require(text.split(separator: "\n").first { $0.hasPrefix("total") })
        for plan in plans { #expect(total.contains(MemoryReport.humanBytes(plan.totalBytes))) }
    }

    @Test(arguments: [false, true])
    func stackedBarsAreProportional(_ ascii: Bool) throws {
        let plans = try Self.plans()
        let width = 50
        let text = MemoryReport.stackedBars(plans, width: width, ascii: ascii)
        let lines = text.split(separator: "\n").map(String.init)
        let largest = plans.map(\.totalBytes).max()!
        for (plan, line) in zip(plans, lines) {
            #expect(line.hasPrefix(plan.label))
            let bar = line.split(separator: "│")[1]
            var cumulative = 0
            for category in MemoryCategory.allCases {
                let start = MemoryReport.cellIndex(cumulative, largest, width)
                cumulative += plan.breakdown[category]
                let expected = MemoryReport.cellIndex(cumulative, largest, width) - start
                let glyph = Character(category.glyph(ascii: ascii))
                #expect(bar.filter { $0 == glyph }.count == expected, "\(plan.label) \(category.rawValue)")
            }
            let filled = bar.filter { $0 != " " }.count
            #expect(filled == MemoryReport.cellIndex(plan.totalBytes, largest, width))
            #expect(bar.count == width)
        }
        let legend = try #require(lines.last)
        for category in MemoryCategory.allCases { #expect(legend.contains("\(category.glyph(ascii: ascii)) \(category.rawValue)")) }
        let glyphs = Set(MemoryCategory.allCases.map { $0.glyph(ascii: ascii) })
        #expect(glyphs.count == MemoryCategory.allCases.count)
    }

    @Test func jsonCarriesTheSameNumbers() throws {
        let plans = try Self.plans()
        let text = MemoryReport.json(plans, model: "smollm2-135m")
        let json = try JSONValue.parse(data: Data(text.utf8))
        #expect(json["model"]?.stringValue == "smollm2-135m")
        guard case .array(let entries)? = json["plans"] else { Issue.record("no plans array"); return }
        #expect(entries.count == plans.count)
        for (plan, entry) in zip(plans, entries) {
            #expect(entry["label"]?.stringValue == plan.label)
            #expect(entry["method"]?.stringValue == plan.options.method.rawValue)
            for category in MemoryCategory.allCases {
                #expect(entry["bytes"]?[category.rawValue]?.intValue == plan.breakdown[category])
            }
            #expect(entry["total_bytes"]?.intValue == plan.totalBytes)
            #expect(entry["parameters"]?["trainable"]?.intValue == plan.trainableParameterCount)
            #expect(entry["options"]?["seq_len"]?.intValue == 256)
        }
    }

    @Test func svgIsWellFormedWithABarSegmentPerNonZeroCategory() throws {
        let plans = try Self.plans()
        let svg = MemoryReport.svg(plans, title: "SmolLM2 <135M> & co")
        let parser = XMLParser(data: Data(svg.utf8))
        final class Counter: NSObject, XMLParserDelegate {
            var rects = 0, titles = 0
            func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                        attributes: [String: String] = [:]) {
                if name == "rect" { rects += 1 }
                if name == "title" { titles += 1 }
            }
        }
        let counter = Counter()
        parser.delegate = counter
        #expect(parser.parse(), "SVG is not well-formed XML: \(parser.parserError.map { "\($0)" } ?? "")")
        let segments = plans.reduce(0) { total, plan in total + MemoryCategory.allCases.filter { plan.breakdown[$0] > 0 }.count }
        // background + segments + legend swatches
        #expect(counter.rects == 1 + segments + MemoryCategory.allCases.count)
        #expect(counter.titles == segments)
        #expect(svg.contains("SmolLM2 &lt;135M&gt; &amp; co"))
    }

    @Test func planVersusMeasuredShowsDifferences() throws {
        let planned = try Self.plans()[3].breakdown
        var measured = planned
        measured[.runtimeOverhead] = 0
        let same = MemoryReport.planVersusMeasured(planned: planned, measured: measured, peakResidentBytes: planned.total)
        let lines = same.split(separator: "\n").map(String.init)
        for category in MemoryCategory.allCases where category != .runtimeOverhead {
            let line = try #require(lines.first { $0.hasPrefix(category.rawValue) })
            #expect(line.hasSuffix(" 0"), "\(line)")
        }
        #expect(same.contains("+0.0 %"))
        measured[.workspace] += 1024
        let peak = planned.total + (3 << 20)
        let different = MemoryReport.planVersusMeasured(planned: planned, measured: measured, peakResidentBytes: peak)
        let workspace = try #require(different.split(separator: "\n").first { $0.hasPrefix("workspace") })
        #expect(workspace.contains("+1.00 KiB") && workspace.hasSuffix("+1,024"))
        #expect(different.contains("+3.00 MiB"))
        let buffers = measured.total
        #expect(different.contains("peak RSS not in measured buffers: \(MemoryReport.humanBytes(peak - buffers))"))
    }
}
