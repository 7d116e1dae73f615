class InputContainer: pass
