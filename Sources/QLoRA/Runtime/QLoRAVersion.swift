public enum QLoRAVersion {
    public static let string = "0.1.0"
}
