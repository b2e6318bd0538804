/// The memory a running executor really holds, per category, from the buffers themselves.
public enum LiveMemory {
    /// `datasetBytes`: what the training data holds in memory (`Batcher.heldBytes` plus the token
    /// file's index), which the executor does not know.
    public static func breakdown(executor: LlamaExecutor, datasetBytes: Int = 0) -> MemoryBreakdown {
        var result = MemoryBreakdown()
        let frozen = executor.model.frozenBytes
        result[.quantizedWeights] = frozen.quantized
        result[.otherFrozenWeights] = frozen.other
        if let lora = executor.lora {
            let section = lora.parameters.sectionBytes
            result[.trainableParameters] = section
            if lora.parameters.sections == 4 {
                result[.gradients] = section
                result[.optimizerState] = 2 * section
            }
        }
        result[.activations] = executor.arena.floats(prefix: "saved.") * 4
        // Workspace: arena scratch plus the executor's index buffers and RoPE tables.
        result[.workspace] = executor.arena.floats(prefix: "work.") * 4
            + LlamaExecutor.auxiliaryBytes(config: executor.model.config, shape: executor.shape)
        result[.dataset] = datasetBytes
        return result
    }
}
